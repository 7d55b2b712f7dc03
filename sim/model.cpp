// The simulator's driver of PoolCore: it plays the application, the database and the network
// in model time, and carries out the pool's actions with modeled costs.
//
// How the world behaves (documented for users in README.md):
//  - A request arrives, is routed to a process, waits for a free thread if app.threads caps
//    them, then checks out. Its wait is from checkout request to grant (or to its failure).
//  - A connect takes database.connect of the server's work. With connect_sharing = queue at most
//    database.connect_capacity set-ups run at once (the rest queue at the server); with shared
//    all run at once and share the capacity (processor sharing: n set-ups each progress at
//    min(1, capacity / n) times full speed, as CPU-bound handshakes on a few cores do; or,
//    with a curve of capacities over concurrency, at capacity(n) / n: Scenario::connect_speed).
//    A connect is refused (too_many_connections, after the set-up cost) when the server already has
//    database.max_connections backends, fails at once during an outage, and fails with probability
//    network.connect_fail (connect_failed).
//  - A connection dies silently when a middlebox drops it after network.idle_drop_after idle,
//    at random (network.drop_rate per hour), when the server closes it after
//    database.idle_session_timeout idle, or in an outage. Nobody notices until it is used: a
//    pre-ping then reports a disconnect (the pool reconnects), and without pre_ping the
//    request's first statement fails after one round trip (database.ping) with a disconnect
//    error, which invalidates the pool as SQLAlchemy's Engine does.
//  - The server counts a backend from the start of its set-up until the client closes it, the
//    server closes it (idle_session_timeout) or an outage kills it.
//  - With pool.policy = static every checkout gets the process's one connection at once, as
//    StaticPool gives it, but a PostgreSQL connection runs one statement at a time (libpq has
//    one query in flight; psycopg2 locks the connection for each execute), so requests take
//    turns on it, oldest first, from checkout to the end of their reset. The wait for a turn
//    is reported as the request's wait.
//  - With pool.policy = pgbouncer each process's QueuePool connects to pgbouncer (a set-up of
//    pgbouncer.connect: pgbouncer logs clients in itself) and one pgbouncer in transaction
//    pooling serves them all: a request that has its client connection then waits for one of
//    pgbouncer's server connections, holds it for its statements and its reset (the ROLLBACK
//    ends the transaction), and gives it back. The request's wait runs from checkout to the
//    server's grant. pgbouncer's logins are the server's connects (database.connect, refused
//    beyond database.max_connections); its server_check_query is a database.ping. The server
//    counts pgbouncer's servers only; the connections in the result are the app's. A client
//    pgbouncer refuses (query_wait_timeout, a failing login) is disconnected, which SQLAlchemy
//    takes as a disconnect: its pool is invalidated.
//  - Requests still in flight at the end run on to their outcome, which is counted. A pool
//    that works in the background (pool.policy = hikari, psycopg) stops its own timers then,
//    once no request waits on them (for a connection, or between psycopg.check's tries).
#include "sim/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "pool_model/hikari_core.hpp"
#include "pool_model/overloaded.hpp"
#include "pool_model/pgbouncer_core.hpp"
#include "pool_model/pool_core.hpp"
#include "pool_model/psycopg_core.hpp"
#include "pool_model/ring_queue.hpp"
#include "pool_model/static_core.hpp"
#include "sim/engine.hpp"
#include "sim/random.hpp"
#include "sim/workload.hpp"

namespace poolsim::sim {
namespace {

enum class Kind : std::uint8_t {
  kArrival,          // the next open-loop arrival
  kThinkDone,        // a closed-loop client sends its next request (a = client)
  kStartCheckout,    // a request got a thread (a = request)
  kTurn,             // static: the shared connection is this request's now (a = request)
  kSetupDone,        // a connection set-up finished (a = slot, b = SetupKind)
  kSharedSetupDone,  // the shared set-up with the least work left finished (a = generation)
  kPingDone,         // a pre-ping round trip finished (a = slot, b = 1 if the connection was dead)
  kTransaction,      // pgbouncer: a request with its app connection asks for a server (a = request)
  kHoldDone,         // a request finished using its connection (a = request, b = 1: it was dead)
  kResetDone,        // reset-on-return finished (a = request)
  kPoolTimer,        // the process's oldest waiter may have reached its deadline (a = generation)
  kBouncerTimer,     // pgbouncer's janitor tick (a = generation)
  kServerIdleClose,  // idle_session_timeout for an idle connection (a = conn, b = idle generation)
  kDrop,             // a random silent drop (a = conn, b = life)
  kOutageStart,
  kOutageEnd,
  kWarmupEnd,
  kEnd,
};

// kSetupDone's b: the kind in the low byte, the server epoch (outages so far) above it, so a
// set-up that an outage interrupted is known as dead when it finishes.
// kToBouncer: an app connection's set-up to pgbouncer, which the server never sees.
enum SetupKind : std::uint64_t { kNormal = 0, kRefused = 1, kServerDown = 2, kToBouncer = 3 };
enum Cause : int { kCauseConnectFailed = 1, kCauseTooManyConnections = 2 };

constexpr std::uint32_t kNoClient = ~0u;
// A closed-loop request's hold, drawn when it gets its connection. (Not an optional: passing
// one by value costs a store-forwarding stall per request, see workload.hpp.)
constexpr Duration kDrawHold = Duration::min();
// The "process" of pgbouncer's own events and set-ups (pool.policy = pgbouncer).
constexpr std::uint32_t kBouncer = ~0u;

// The event queue's FIFO lanes (see engine.hpp): streams whose events come in time order.
enum Lane : std::size_t {
  kLaneArrivals,   // each arrival is scheduled by the one before it
  kLaneReset,      // now + database.reset, when it is a constant
  kLanePing,       // now + database.ping, when it is a constant
  kLaneIdleClose,  // now + database.idle_session_timeout, always a constant
};

struct Request {
  Instant arrival{};
  Instant checkout_start{};
  Duration hold{};  // the workload's, or kDrawHold
  std::uint32_t process = 0;
  std::uint32_t client = kNoClient;
  std::size_t sample = 0;  // its entry in Samples, when they are kept
  SlotId slot{};
  SlotId server_slot{};
  ConnId conn{};
  bool counted = false;
  bool on_server = false;  // pgbouncer: it has a server, server_slot, for its transaction
};
static_assert(sizeof(Request) == 64, "one cache line: the fields are ordered so none pads another");

struct Conn {
  std::uint32_t process = 0;
  bool on_server = false;
  bool dead = false;
  bool idle = false;
  Instant idle_since{};
  std::uint64_t idle_gen = 0;    // changes whenever it starts or stops being idle
  std::uint64_t life = 0;        // changes when the slot is reused for another connection
  std::uint32_t open_index = 0;  // its place in Simulation::open_ids_
};

struct Setup {
  std::uint32_t process;
  SlotId slot;
};

// A set-up running under connect_sharing = shared: it is done when the work every running
// set-up has received reaches `finish` (see Simulation::shared_work_).
struct SharedSetup {
  std::uint32_t process;
  SlotId slot;
  std::uint64_t kind_and_epoch;  // kSetupDone's b
  double finish;                 // ns of work
};

// One worker process's pool: PoolCore (queuepool, null), StaticCore (static), HikariCore
// (hikari) or PsycopgCore (psycopg).
template <typename Core>
struct Process {
  explicit Process(Core pool) : core(std::move(pool)) {}
  Core core;
  int busy = 0;
  RingQueue<std::uint32_t> thread_queue;
  bool turn_taken = false;              // static: a request is using the shared connection
  RingQueue<std::uint32_t> turn_queue;  // static: requests waiting for their turn on it
  std::optional<Instant> timer_at;
  std::uint64_t timer_gen = 0;
};

template <typename T>
class Slab {  // objects named by a small integer, reused after release: no allocation per use
 public:
  std::uint32_t acquire() {
    if (!free_.empty()) {
      const std::uint32_t id = free_.back();
      free_.pop_back();
      return id;
    }
    items_.emplace_back();
    return static_cast<std::uint32_t>(items_.size() - 1);
  }
  void release(std::uint32_t id) { free_.push_back(id); }
  T& operator[](std::uint64_t id) { return items_[static_cast<std::size_t>(id)]; }

 private:
  std::vector<T> items_;
  std::vector<std::uint32_t> free_;
};

// A pool of the scenario's policy, for one process of one replication. HikariCP's jitter of
// max_lifetime and keepalive, and psycopg_pool's of max_lifetime and its reconnect back-off,
// draw from the pool's own stream.
template <typename Core>
Core make_core(const Scenario& s, int replication, std::uint32_t process);
template <>
PoolCore make_core<PoolCore>(const Scenario& s, int, std::uint32_t) {
  PoolConfig config = s.pool;
  if (config.policy == Policy::kPgbouncer) config.policy = Policy::kQueuePool;  // the app's pool
  return PoolCore(config);
}
template <>
StaticCore make_core<StaticCore>(const Scenario& s, int, std::uint32_t) {
  return StaticCore(s.pool);
}
template <>
HikariCore make_core<HikariCore>(const Scenario& s, int replication, std::uint32_t process) {
  HikariConfig config = s.hikari;
  config.seed = stream_rng(s.seed, Stream::kPoolJitter,
                           static_cast<std::uint64_t>(replication) * 10'000 + process)
                    .next();
  return HikariCore(config);
}
template <>
PsycopgCore make_core<PsycopgCore>(const Scenario& s, int replication, std::uint32_t process) {
  PsycopgConfig config = s.psycopg;
  config.seed = stream_rng(s.seed, Stream::kPoolJitter,
                           static_cast<std::uint64_t>(replication) * 10'000 + process)
                    .next();
  return PsycopgCore(config);
}

bool nobody_waits(const HikariCore& core) { return core.status().waiting == 0; }
bool nobody_waits(const PsycopgCore& core) { return !core.clients_wait_on_timers(); }

template <typename Core>
class Simulation {
  // HikariCP's and psycopg_pool's connections are opened by the pool itself (by its threads)
  // and wait idle in it until used.
  static constexpr bool kBackgroundConnects =
      std::is_same_v<Core, HikariCore> || std::is_same_v<Core, PsycopgCore>;
  static constexpr bool kOneConnection = std::is_same_v<Core, StaticCore>;

 public:
  Simulation(const Scenario& s, int replication, const Progress& progress, Samples* samples)
      : s_(s),
        progress_(progress),
        samples_(samples),
        replication_(replication),
        workload_(s, replication),
        service_(stream_rng(s.seed, Stream::kService, static_cast<std::uint64_t>(replication))),
        connect_(stream_rng(s.seed, Stream::kConnect, static_cast<std::uint64_t>(replication))),
        ping_(stream_rng(s.seed, Stream::kPing, static_cast<std::uint64_t>(replication))),
        reset_(stream_rng(s.seed, Stream::kReset, static_cast<std::uint64_t>(replication))),
        drops_(stream_rng(s.seed, Stream::kDrops, static_cast<std::uint64_t>(replication))),
        connect_fail_(
            stream_rng(s.seed, Stream::kConnectFail, static_cast<std::uint64_t>(replication))),
        routing_(stream_rng(s.seed, Stream::kRouting, static_cast<std::uint64_t>(replication))),
        think_(stream_rng(s.seed, Stream::kThink, static_cast<std::uint64_t>(replication))),
        warmup_end_(Instant(s.warmup)),
        end_(Instant(s.warmup + s.duration)) {
    processes_.reserve(static_cast<std::size_t>(s.processes));
    for (int i = 0; i < s.processes; ++i) {
      processes_.emplace_back(make_core<Core>(s, replication, static_cast<std::uint32_t>(i)));
    }
    if (s.pool.policy == Policy::kPgbouncer) bouncer_.emplace(s.pgbouncer);
  }

  ReplicationStats run() {
    open_.start(Instant{}, 0);
    in_use_.start(Instant{}, 0);
    server_.start(Instant{}, 0);
    in_window_ = s_.warmup.count() == 0;
    if (!in_window_) queue_.schedule(warmup_end_, Kind::kWarmupEnd);
    queue_.schedule(end_, Kind::kEnd);
    for (std::size_t i = 0; i < s_.outages.size(); ++i) {
      queue_.schedule(Instant(s_.outages[i].start), Kind::kOutageStart);
      queue_.schedule(Instant(s_.outages[i].start + s_.outages[i].length), Kind::kOutageEnd);
    }
    if constexpr (kBackgroundConnects) {  // the pools are created: they start filling
      for (std::uint32_t p = 0; p < processes_.size(); ++p) {
        processes_[p].core.start(Instant{});
        drain(p);
      }
    }
    if (bouncer_) {
      bouncer_->start(Instant{});
      drain_bouncer();
    }
    if (s_.arrival == Arrival::kClosed) {
      for (int c = 0; c < s_.clients; ++c) {
        queue_.schedule(Instant{} + s_.think.sample(think_), Kind::kThinkDone, 0,
                        static_cast<std::uint64_t>(c));
      }
    } else {
      schedule_next_arrival();
    }

    while (!queue_.empty()) {
      if (stopped_ && in_flight_counted_ == 0) break;
      const SimEvent<Kind> e = queue_.pop();
      now_ = e.at;
      ++stats_.events;
      if (progress_ && (stats_.events & 0xFFFF) == 0) {
        progress_(std::min(
            1.0, to_seconds(now_.time_since_epoch()) / to_seconds(end_.time_since_epoch())));
      }
      dispatch(e);
    }
    stats_.sim_time_s = to_seconds(s_.duration);
    return std::move(stats_);
  }

 private:
  // ---- events --------------------------------------------------------------------------------

  void dispatch(const SimEvent<Kind>& e) {
    switch (e.kind) {
      case Kind::kArrival: on_arrival(Duration(static_cast<std::int64_t>(e.a))); return;
      case Kind::kThinkDone:
        if (!stopped_) arrive(kDrawHold, static_cast<std::uint32_t>(e.a));
        return;
      case Kind::kStartCheckout: start_checkout(static_cast<std::uint32_t>(e.a)); return;
      case Kind::kTurn: feed(e.process, CheckoutRequested{RequestId{e.a}}); return;
      case Kind::kSetupDone:
        setup_done(e.process, SlotId{static_cast<std::uint32_t>(e.a)}, e.b & 0xFF, e.b >> 8);
        return;
      case Kind::kSharedSetupDone: {
        if (e.a != shared_gen_) return;  // superseded: the set of running set-ups changed
        advance_shared_work();
        const auto first = std::min_element(
            shared_.begin(), shared_.end(),
            [](const SharedSetup& x, const SharedSetup& y) { return x.finish < y.finish; });
        const SharedSetup done = *first;
        *first = shared_.back();
        shared_.pop_back();
        schedule_shared_setup();
        setup_done(done.process, done.slot, done.kind_and_epoch & 0xFF, done.kind_and_epoch >> 8);
        return;
      }
      case Kind::kPingDone:
        feed(e.process, PingResult{SlotId{static_cast<std::uint32_t>(e.a)},
                                   e.b ? PingOutcome::kDisconnect : PingOutcome::kOk, 0});
        return;
      case Kind::kTransaction: feed(kBouncer, CheckoutRequested{RequestId{e.a}}); return;
      case Kind::kHoldDone: hold_done(static_cast<std::uint32_t>(e.a), e.b != 0); return;
      case Kind::kResetDone: reset_done(static_cast<std::uint32_t>(e.a)); return;
      case Kind::kPoolTimer: {
        Process<Core>& proc = processes_[e.process];
        if (e.a != proc.timer_gen) return;  // superseded
        proc.timer_at.reset();
        proc.core.handle_timeout(now_);
        drain(e.process);
        return;
      }
      case Kind::kBouncerTimer:
        if (e.a != bouncer_timer_gen_) return;  // superseded
        bouncer_timer_at_.reset();
        bouncer_->handle_timeout(now_);
        drain_bouncer();
        return;
      case Kind::kServerIdleClose: {
        Conn& c = conns_[e.a];
        if (c.idle && c.idle_gen == e.b && c.on_server) {
          leave_server(c);
          c.dead = true;
        }
        return;
      }
      case Kind::kDrop: {
        Conn& c = conns_[e.a];
        if (c.life == e.b) c.dead = true;
        return;
      }
      case Kind::kOutageStart:
        server_down_ = true;
        ++server_epoch_;
        for (std::uint32_t id : open_ids_) {
          Conn& c = conns_[id];
          c.dead = true;
          if (c.on_server) leave_server(c);
        }
        set_server_count(server_count_ - connecting_);  // set-ups in progress die too
        connecting_ = 0;
        return;
      case Kind::kOutageEnd: server_down_ = false; return;
      case Kind::kWarmupEnd:
        in_window_ = true;
        open_.restart(now_);
        in_use_.restart(now_);
        server_.restart(now_);
        return;
      case Kind::kEnd:
        stats_.mean_open = open_.mean(now_);
        stats_.peak_open = open_.peak();
        stats_.mean_in_use = in_use_.mean(now_);
        stats_.peak_server = server_.peak();
        in_window_ = false;
        stopped_ = true;
        return;
    }
  }

  // ---- arrivals --------------------------------------------------------------------------------

  void schedule_next_arrival() {
    if (std::optional<PlannedRequest> next = workload_.next()) {
      queue_.schedule_in_order(kLaneArrivals, next->at, Kind::kArrival, 0,
                               static_cast<std::uint64_t>(next->hold.count()));
    }
  }

  static Duration seconds(double s) { return from_seconds(s); }

  // now + d. Every delay is at most kMaxDuration, but a chain of them (connects queued behind
  // each other, holds behind one thread) can pass the end of the int64 range: time stops there.
  Instant later(Duration d) const { return saturating_add(now_, d); }

  void on_arrival(Duration hold) {
    arrive(hold, kNoClient);
    schedule_next_arrival();
  }

  void arrive(Duration hold, std::uint32_t client) {
    const std::uint32_t id = requests_.acquire();
    Request& r = requests_[id];
    r = Request{};
    r.arrival = now_;
    r.client = client;
    r.hold = hold;
    r.counted = in_window_;
    r.process =
        s_.routing == Routing::kRandom
            ? static_cast<std::uint32_t>(routing_.below(static_cast<std::uint64_t>(s_.processes)))
            : static_cast<std::uint32_t>(next_process_++ %
                                         static_cast<std::uint64_t>(s_.processes));
    if (r.counted) {
      ++stats_.requests;
      ++in_flight_counted_;
    }
    Process<Core>& proc = processes_[r.process];
    if (s_.threads > 0 && proc.busy >= s_.threads) {
      proc.thread_queue.push_back(id);
    } else {
      start_checkout(id);
    }
  }

  void start_checkout(std::uint32_t id) {
    Request& r = requests_[id];
    Process<Core>& proc = processes_[r.process];
    ++proc.busy;
    r.checkout_start = now_;
    if constexpr (kOneConnection) {
      if (proc.turn_taken) {
        proc.turn_queue.push_back(id);
        return;
      }
      proc.turn_taken = true;
    }
    feed(r.process, CheckoutRequested{RequestId{id}});
  }

  // ---- driving the pools ------------------------------------------------------------------------

  // E is one of Event's alternatives: PoolCore takes it as it is, the other cores as an Event.
  template <typename E>
  void feed(std::uint32_t process, const E& event) {
    if (process == kBouncer) [[unlikely]] {
      feed_bouncer(event);
      return;
    }
    processes_[process].core.handle(now_, event);
    drain(process);
  }

  void feed_bouncer(const Event& event) {
    bouncer_->handle(now_, event);
    drain_bouncer();
  }

  // pgbouncer's actions: its logins and closes are the server's connections, its checks round
  // trips, its grants start a transaction's statements.
  void drain_bouncer() {
    bouncer_->take_actions(Overloaded{
        [&](const OpenConnection& a) { open_connection(kBouncer, a.slot); },
        [&](const CloseConnection&) { set_server_count(server_count_ - 1); },
        [&](const Ping& a) {
          schedule_after_ping(Kind::kPingDone, kBouncer, static_cast<std::uint64_t>(a.slot), 0);
        },
        [&](const Grant& a) {
          Request& r = requests_[static_cast<std::uint64_t>(a.request)];
          r.on_server = true;
          r.server_slot = a.slot;
          start_hold(static_cast<std::uint32_t>(a.request));
        },
        [&](const Fail& a) {
          // pgbouncer disconnects the client: SQLAlchemy sees a disconnect.
          const Request& r = requests_[static_cast<std::uint64_t>(a.request)];
          in_use_.set(now_, --in_use_count_);
          feed(r.process, DisconnectDetected{r.slot});
          failed(a);
        },
        [&](const Reset&) {},
        [&](const Notify&) {},
    });
    // After the end its janitor stops once no transaction waits for a server.
    if (now_ >= end_ && bouncer_->status().cl_waiting == 0) return;
    if (auto tick = bouncer_->poll_timeout();
        tick && (!bouncer_timer_at_ || *tick < *bouncer_timer_at_)) {
      bouncer_timer_at_ = std::max(*tick, now_);
      queue_.schedule(*bouncer_timer_at_, Kind::kBouncerTimer, 0, ++bouncer_timer_gen_);
    }
  }

  // pgbouncer: the transaction of request `id` has ended (its statements and its reset), so
  // its server goes back to pgbouncer.
  void end_transaction(std::uint32_t id) {
    if (!bouncer_) [[likely]]
      return;
    Request& r = requests_[id];
    if (!r.on_server) return;
    r.on_server = false;
    feed(kBouncer, Returned{r.server_slot});
  }

  void drain(std::uint32_t p) {
    Process<Core>& proc = processes_[p];
    proc.core.take_actions(Overloaded{
        [&](const OpenConnection& a) { open_connection(p, a.slot); },
        [&](const CloseConnection& a) { close_connection(a.conn); },
        [&](const Ping& a) {
          const auto id = static_cast<std::uint32_t>(a.conn);
          Conn& c = conns_[id];
          const bool dead = is_dead(c);
          stop_idle(c);
          // A keepalive: the connection stays idle, its idle time starts again.
          if (!a.request && !dead) start_idle(id);
          schedule_after_ping(Kind::kPingDone, p, static_cast<std::uint64_t>(a.slot), dead ? 1 : 0);
        },
        [&](const Reset&) {
          reset_scheduled_ = true;
          const Instant done = later(s_.reset.sample(reset_));
          if (s_.reset.is_constant()) {
            queue_.schedule_in_order(kLaneReset, done, Kind::kResetDone, p, current_request_);
          } else {
            queue_.schedule(done, Kind::kResetDone, p, current_request_);
          }
        },
        [&](const Grant& a) { granted(a); },
        [&](const Fail& a) { failed(a); },
        [&](const Notify&) {},
    });
    if constexpr (kBackgroundConnects) {
      // After the end a pool that nobody waits on runs no more of its own timers (HikariCP's
      // housekeeping, lifetimes, keepalives; psycopg_pool's ShrinkPool and connect retries):
      // they cannot change a request's outcome now, and a request in a day-long reset would
      // keep them ticking for the whole day.
      if (now_ >= end_ && nobody_waits(proc.core)) return;
    }
    // One timer per pool, for its oldest waiter; a timer that fires early is harmless. (One
    // skipped after the end may be overdue: it runs now.)
    const Instant deadline = proc.core.poll_timeout().value_or(kNever);
    if (deadline != kNever && (!proc.timer_at || deadline < *proc.timer_at)) {
      const Instant at = deadline > now_ ? deadline : now_;
      proc.timer_at = at;
      queue_.schedule(at, Kind::kPoolTimer, p, ++proc.timer_gen);
    }
  }

  // A round trip's end: the pre-ping's, or a dead connection's first statement's.
  void schedule_after_ping(Kind kind, std::uint32_t process, std::uint64_t a, std::uint64_t b) {
    const Instant done = later(s_.ping.sample(ping_));
    if (s_.ping.is_constant()) {
      queue_.schedule_in_order(kLanePing, done, kind, process, a, b);
    } else {
      queue_.schedule(done, kind, process, a, b);
    }
  }

  void granted(const Grant& g) {
    const auto id = static_cast<std::uint32_t>(g.request);
    Request& r = requests_[id];
    r.slot = g.slot;
    r.conn = g.conn;
    if (!bouncer_) record_wait(r);  // with pgbouncer the wait ends at the server's grant
    in_use_.set(now_, ++in_use_count_);
    Conn& c = conns_[static_cast<std::uint64_t>(g.conn)];
    if (is_dead(c)) {  // the first statement fails after a round trip
      stop_idle(c);
      schedule_after_ping(Kind::kHoldDone, r.process, id, 1);
      return;
    }
    stop_idle(c);
    if (bouncer_) [[unlikely]] {  // its first statement asks pgbouncer for a server (an event)
      queue_.schedule(now_, Kind::kTransaction, r.process, id);
      return;
    }
    start_hold(id);
  }

  // A request has its connection (with pgbouncer: its server too): its statements run.
  void start_hold(std::uint32_t id) {
    Request& r = requests_[id];
    if (bouncer_) record_wait(r);
    const Duration hold = r.hold == kDrawHold ? s_.service.sample(service_) : r.hold;
    queue_.schedule(later(hold), Kind::kHoldDone, r.process, id, 0);
  }

  void failed(const Fail& f) {
    const auto id = static_cast<std::uint32_t>(f.request);
    Request& r = requests_[id];
    record_wait(r);
    if (r.counted) {
      Samples::Outcome outcome = Samples::kConnectFailed;
      if (f.failure == Failure::kTimeout || f.failure == Failure::kNegativeTimeout) {
        ++stats_.timeouts;
        outcome = Samples::kTimeout;
      } else if (f.cause == kCauseTooManyConnections) {
        ++stats_.too_many_connections;
        outcome = Samples::kTooManyConnections;
      } else {
        ++stats_.connect_failed;
      }
      if (samples_) samples_->outcome[r.sample] = outcome;
    }
    finish(id);
  }

  void hold_done(std::uint32_t id, bool dead_at_grant) {
    Request& r = requests_[id];
    Conn& c = conns_[static_cast<std::uint64_t>(r.conn)];
    if (dead_at_grant || c.dead) {
      end_transaction(id);
      in_use_.set(now_, --in_use_count_);
      if (r.counted) {
        ++stats_.disconnect;
        if (samples_) samples_->outcome[r.sample] = Samples::kDisconnect;
      }
      feed(r.process, DisconnectDetected{r.slot});
      finish(id);
      return;
    }
    if (s_.pool.reset_on_return == ResetOnReturn::kNone)
      start_idle(static_cast<std::uint32_t>(r.conn));
    current_request_ = id;
    reset_scheduled_ = false;
    feed(r.process, Returned{r.slot});
    if (!reset_scheduled_) {
      end_transaction(id);
      complete(id);
    }
  }

  void reset_done(std::uint32_t id) {
    Request& r = requests_[id];
    Conn& c = conns_[static_cast<std::uint64_t>(r.conn)];
    const bool dead = c.dead;
    if (!dead) start_idle(static_cast<std::uint32_t>(r.conn));
    end_transaction(id);  // the ROLLBACK ends the transaction: the server goes back first
    feed(r.process, ResetDone{r.slot, r.conn, dead ? ResetOutcome::kFailed : ResetOutcome::kOk});
    complete(id);
  }

  void complete(std::uint32_t id) {
    Request& r = requests_[id];
    in_use_.set(now_, --in_use_count_);
    if (r.counted) {
      ++stats_.completed;
      stats_.latency.add((now_ - r.arrival).count());
      if (samples_) samples_->latency_ms[r.sample] = 1e-6 * double((now_ - r.arrival).count());
    }
    finish(id);
  }

  void record_wait(Request& r) {
    if (!r.counted) return;
    const std::int64_t wait = (now_ - r.checkout_start).count();
    stats_.wait.add(wait);
    if (wait > 0) ++stats_.waited;
    if (samples_) {
      r.sample = samples_->size();
      samples_->arrival_s.push_back(1e-9 * double(r.arrival.time_since_epoch().count()));
      samples_->wait_ms.push_back(1e-6 * double(wait));
      samples_->latency_ms.push_back(std::numeric_limits<double>::quiet_NaN());
      samples_->outcome.push_back(Samples::kCompleted);
      samples_->replication.push_back(replication_);
      samples_->process.push_back(static_cast<std::int32_t>(r.process));
    }
  }

  // Every request ends here exactly once, whatever its outcome.
  void finish(std::uint32_t id) {
    Request& r = requests_[id];
    Process<Core>& proc = processes_[r.process];
    --proc.busy;
    if constexpr (kOneConnection) {  // the next in line takes the turn at once: no barging
      if (proc.turn_queue.empty()) {
        proc.turn_taken = false;
      } else {
        queue_.schedule(now_, Kind::kTurn, r.process, proc.turn_queue.front());
        proc.turn_queue.pop_front();
      }
    }
    if (!proc.thread_queue.empty()) {
      queue_.schedule(now_, Kind::kStartCheckout, r.process, proc.thread_queue.front());
      proc.thread_queue.pop_front();
    }
    if (r.counted) --in_flight_counted_;
    if (r.client != kNoClient && !stopped_) {
      queue_.schedule(later(s_.think.sample(think_)), Kind::kThinkDone, 0, r.client);
    }
    requests_.release(id);
  }

  // ---- the database and the network ------------------------------------------------------------

  void open_connection(std::uint32_t p, SlotId slot) {
    if (bouncer_ && p != kBouncer) {  // an app connection to pgbouncer: the server sees none
      queue_.schedule(later(s_.bouncer_connect.sample(connect_)), Kind::kSetupDone, p,
                      static_cast<std::uint64_t>(slot), kToBouncer);
      return;
    }
    if (s_.connect_sharing == ConnectSharing::kQueue && s_.connect_capacity > 0 &&
        setups_running_ >= s_.connect_capacity) {
      setup_queue_.push_back(Setup{p, slot});
      return;
    }
    begin_setup(p, slot);
  }

  void begin_setup(std::uint32_t p, SlotId slot) {
    const auto slot_id = static_cast<std::uint64_t>(slot);
    const std::uint64_t epoch = server_epoch_ << 8;
    if (server_down_) {  // nothing listens: refused at once
      queue_.schedule(now_, Kind::kSetupDone, p, slot_id, kServerDown | epoch);
      return;
    }
    ++setups_running_;
    const Duration work = s_.connect.sample(connect_);
    std::uint64_t kind = kRefused;
    if (server_count_ < s_.max_connections) {
      kind = kNormal;
      ++connecting_;
      set_server_count(server_count_ + 1);
    }
    if (s_.connect_sharing == ConnectSharing::kShared) {
      advance_shared_work();
      shared_.push_back(
          SharedSetup{p, slot, kind | epoch, shared_work_ + static_cast<double>(work.count())});
      schedule_shared_setup();
      return;
    }
    queue_.schedule(later(work), Kind::kSetupDone, p, slot_id, kind | epoch);
  }

  // Processor sharing of set-ups: while n run, each receives connect_speed(n) ns of work per
  // ns (min(1, capacity / n), or capacity(n) / n on a curve). shared_work_ is the work each has
  // received since the first began, so a set-up started with work w when it stood at W is done
  // when it reaches W + w.
  double shared_speed() const { return s_.connect_speed(static_cast<double>(shared_.size())); }
  void advance_shared_work() {
    shared_work_ += static_cast<double>((now_ - shared_since_).count()) * shared_speed();
    shared_since_ = now_;
  }
  // One event, for the set-up that finishes first at the current speed; any change to the set
  // of running set-ups supersedes it.
  void schedule_shared_setup() {
    ++shared_gen_;
    if (shared_.empty()) return;
    double least = shared_.front().finish;
    for (const SharedSetup& x : shared_) least = std::min(least, x.finish);
    const double ns = std::max(0.0, (least - shared_work_) / shared_speed());
    const Duration left =
        ns < 0x1p62 ? Duration(static_cast<std::int64_t>(std::llround(ns))) : Duration::max();
    queue_.schedule(later(left), Kind::kSharedSetupDone, 0, shared_gen_);
  }

  void setup_done(std::uint32_t p, SlotId slot, std::uint64_t kind, std::uint64_t epoch) {
    if (kind == kToBouncer) {
      feed(p, ConnectSucceeded{slot, ConnId{new_conn(p)}});
      return;
    }
    if (kind != kServerDown) {
      --setups_running_;
      // The queued set-ups that now fit. One that meets a server down is refused at once and
      // takes no capacity, so the next one starts too: none may be left queued with nothing
      // running, which nothing would ever start again.
      while (!setup_queue_.empty() && setups_running_ < s_.connect_capacity) {
        const Setup next = setup_queue_.front();
        setup_queue_.pop_front();
        begin_setup(next.process, next.slot);
      }
    }
    if (kind == kRefused) {
      feed(p, ConnectFailed{slot, kCauseTooManyConnections});
      return;
    }
    if (kind == kServerDown) {
      feed(p, ConnectFailed{slot, kCauseConnectFailed});
      return;
    }
    if (epoch != server_epoch_) {  // an outage killed this set-up's backend
      feed(p, ConnectFailed{slot, kCauseConnectFailed});
      return;
    }
    --connecting_;
    if (s_.connect_fail > 0 && connect_fail_.uniform() < s_.connect_fail) {
      set_server_count(server_count_ - 1);
      feed(p, ConnectFailed{slot, kCauseConnectFailed});
      return;
    }
    if (p == kBouncer) {  // a server of pgbouncer's: the app's connections do not count it
      feed(kBouncer, ConnectSucceeded{slot, ConnId{++server_conns_}});
      return;
    }
    const std::uint32_t id = new_conn(p);
    conns_[id].on_server = true;
    if constexpr (kBackgroundConnects) start_idle(id);  // a grant ends it at once
    feed(p, ConnectSucceeded{slot, ConnId{id}});
  }

  // A connection of process p's pool has just been opened.
  std::uint32_t new_conn(std::uint32_t p) {
    const std::uint32_t id = conns_.acquire();
    Conn& c = conns_[id];
    // A reused slot keeps counting its generations, so timers of its previous connection
    // (drops, server idle closes) can never match the new one.
    const std::uint64_t life = c.life + 1;
    const std::uint64_t idle_gen = c.idle_gen + 1;
    c = Conn{};
    c.life = life;
    c.idle_gen = idle_gen;
    c.process = p;
    c.open_index = static_cast<std::uint32_t>(open_ids_.size());
    open_ids_.push_back(id);
    open_.set(now_, static_cast<double>(open_ids_.size()));
    if (in_window_) ++stats_.opened;
    if (s_.drop_rate > 0) {
      queue_.schedule(later(seconds(drops_.exponential(3600.0 / s_.drop_rate))), Kind::kDrop, 0, id,
                      life);
    }
    return id;
  }

  void close_connection(ConnId conn) {
    const auto id = static_cast<std::uint32_t>(conn);
    Conn& c = conns_[id];
    if (c.on_server) leave_server(c);
    ++c.life;
    c.idle = false;
    const std::uint32_t moved = open_ids_.back();
    open_ids_[c.open_index] = moved;
    conns_[moved].open_index = c.open_index;
    open_ids_.pop_back();
    open_.set(now_, static_cast<double>(open_ids_.size()));
    if (in_window_) ++stats_.closed;
    conns_.release(id);
  }

  void leave_server(Conn& c) {
    c.on_server = false;
    set_server_count(server_count_ - 1);
  }

  void set_server_count(int count) {
    server_count_ = count;
    server_.set(now_, count);
  }

  bool is_dead(const Conn& c) const {
    if (c.dead) return true;
    if (!c.idle) return false;
    const Duration idle = now_ - c.idle_since;
    return (s_.idle_drop_after.count() > 0 && idle >= s_.idle_drop_after) ||
           (s_.idle_session_timeout.count() > 0 && idle >= s_.idle_session_timeout);
  }

  void start_idle(std::uint32_t id) {
    Conn& c = conns_[id];
    c.idle = true;
    c.idle_since = now_;
    ++c.idle_gen;
    if (s_.idle_session_timeout.count() > 0) {
      queue_.schedule_in_order(kLaneIdleClose, later(s_.idle_session_timeout),
                               Kind::kServerIdleClose, c.process, id, c.idle_gen);
    }
  }

  void stop_idle(Conn& c) {
    if (c.idle && !c.dead && is_dead(c)) c.dead = true;  // its idle time already killed it
    c.idle = false;
    ++c.idle_gen;
  }

  const Scenario& s_;
  const Progress& progress_;
  Samples* samples_;  // nullptr unless the caller keeps per-request samples
  std::int32_t replication_;
  Workload workload_;  // open-loop arrivals and their holds
  Rng service_, connect_, ping_, reset_, drops_, connect_fail_, routing_, think_;
  const Instant warmup_end_;
  const Instant end_;
  Instant now_{};

  EventQueue<Kind> queue_;
  std::vector<Process<Core>> processes_;
  Slab<Request> requests_;
  Slab<Conn> conns_;
  std::vector<std::uint32_t> open_ids_;  // open connections, client side
  RingQueue<Setup> setup_queue_;
  std::vector<SharedSetup> shared_;  // running set-ups, connect_sharing = shared
  double shared_work_ = 0;           // ns of work each running set-up has received
  Instant shared_since_{};           // when shared_work_ was brought up to date
  std::uint64_t shared_gen_ = 0;

  std::uint64_t next_process_ = 0;
  std::uint32_t current_request_ = 0;
  bool reset_scheduled_ = false;
  bool server_down_ = false;
  int setups_running_ = 0;
  int connecting_ = 0;  // set-ups the server has started (counted in server_count_)
  std::uint64_t server_epoch_ = 0;
  int server_count_ = 0;
  bool in_window_ = false;
  bool stopped_ = false;
  std::uint64_t in_flight_counted_ = 0;
  double in_use_count_ = 0;
  TimeWeighted open_, in_use_, server_;
  ReplicationStats stats_;
  // Last: a large object most runs never use, kept out of the way of the members above.
  std::optional<PgbouncerCore> bouncer_;  // pool.policy = pgbouncer: shared by every process
  std::optional<Instant> bouncer_timer_at_;
  std::uint64_t bouncer_timer_gen_ = 0;
  std::uint64_t server_conns_ = 0;  // pgbouncer's servers opened so far: their ConnIds
};

}  // namespace

ReplicationStats run_replication(const Scenario& scenario, int replication,
                                 const Progress& progress, Samples* samples) {
  if (scenario.pool.policy == Policy::kHikari) {
    return Simulation<HikariCore>(scenario, replication, progress, samples).run();
  }
  if (scenario.pool.policy == Policy::kStatic) {
    return Simulation<StaticCore>(scenario, replication, progress, samples).run();
  }
  if (scenario.pool.policy == Policy::kPsycopg) {
    return Simulation<PsycopgCore>(scenario, replication, progress, samples).run();
  }
  return Simulation<PoolCore>(scenario, replication, progress, samples).run();
}

}  // namespace poolsim::sim
