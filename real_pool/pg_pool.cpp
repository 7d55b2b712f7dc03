#include "real_pool/pg_pool.hpp"

#include <poll.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "pool_model/overloaded.hpp"

namespace poolsim::real_pool {
namespace detail {
namespace {

// What the core can answer a checkout with; each goes to the thread of its request.
using Answer = std::variant<OpenConnection, Ping, Grant, Fail>;

// A checkout in flight: lives on its thread's stack, linked into the pool's list so that
// another thread's input can hand it its answer.
struct Request {
  RequestId id{};
  std::condition_variable wake;
  std::optional<Answer> answer;
  Request* prev = nullptr;
  Request* next = nullptr;
};

// I/O collected under the lock and done after it, by the thread that caused it.
class Work {
 public:
  void close(PGconn* conn) {
    if (small_count_ < small_.size()) {
      small_[small_count_++] = conn;
    } else {
      more_.push_back(conn);
    }
  }
  void run_closes() {
    for (std::size_t i = 0; i < small_count_; ++i) PQfinish(small_[i]);
    small_count_ = 0;
    for (PGconn* conn : more_) PQfinish(conn);
    more_.clear();
  }
  std::optional<Reset> reset;
  PGconn* reset_conn = nullptr;

 private:
  std::array<PGconn*, 4> small_{};
  std::size_t small_count_ = 0;
  std::vector<PGconn*> more_;  // only pool-wide closes (dispose) get here
};

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "PgPool: %s\n", what);
  std::abort();
}

bool too_many_clients(const std::string& message) {
  return message.find("too many clients") != std::string::npos ||
         message.find("remaining connection slots are reserved") != std::string::npos ||
         message.find("53300") != std::string::npos;
}

// libpq's connect_timeout from a conninfo string or URI (seconds; 0 or less = none), if set.
std::optional<std::optional<Duration>> conninfo_connect_timeout(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  PQfreemem(error);  // a malformed conninfo is reported by the first connect, as libpq words it
  std::optional<std::optional<Duration>> found;
  for (PQconninfoOption* o = options; o != nullptr && o->keyword != nullptr; ++o) {
    if (std::string(o->keyword) != "connect_timeout" || o->val == nullptr) continue;
    const long seconds = std::strtol(o->val, nullptr, 10);
    found = seconds > 0 ? std::optional<Duration>(std::chrono::seconds(seconds)) : std::nullopt;
  }
  PQconninfoFree(options);
  return found;
}

}  // namespace

class PoolState {
 public:
  PoolState(std::string conninfo, const PoolConfig& config, std::optional<Duration> timeout)
      : conninfo_(std::move(conninfo)),
        connect_timeout_(conninfo_connect_timeout(conninfo_).value_or(timeout)),
        core_(config) {}

  mutable std::mutex mutex;
  PoolCore& core() { return core_; }
  const PoolCore& core() const { return core_; }
  PgPool::Counters counters;  // guarded by mutex
  std::size_t open_connections() const { return conns_.size(); }

  // The one place the real pool reads a clock.
  static Instant steady_now() {
    return Instant(
        std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now().time_since_epoch()));
  }
  // The core's time. Called with the mutex held, so the core never sees time go backwards.
  Instant now() {
    last_now_ = std::max(last_now_, steady_now());
    return last_now_;
  }

  static std::chrono::steady_clock::time_point to_steady(Instant instant) {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            instant.time_since_epoch()));
  }

  void link(Request& request) {
    request.id = RequestId{++last_request_};
    request.next = requests_;
    if (requests_ != nullptr) requests_->prev = &request;
    requests_ = &request;
  }
  void unlink(Request& request) {
    if (request.prev != nullptr) request.prev->next = request.next;
    if (request.next != nullptr) request.next->prev = request.prev;
    if (requests_ == &request) requests_ = request.next;
    request.prev = request.next = nullptr;
  }

  // Feeds one input to the core and drains what it asks for (mutex held).
  // Returns the time it passed.
  Instant handle(const Event& event, Request* self, Work& work) {
    const Instant at = now();
    core_.handle(at, event);
    drain(self, work);
    return at;
  }

  PGconn* conn(ConnId id) const {
    const auto found = conns_.find(id);
    if (found == conns_.end()) broken("the core named a connection the pool does not hold");
    return found->second;
  }
  ConnId add_conn(PGconn* conn) {
    const ConnId id{++last_conn_};
    conns_.emplace(id, conn);
    ++counters.opened;
    return id;
  }
  PGconn* remove_conn(ConnId id) {
    PGconn* conn = this->conn(id);
    conns_.erase(id);
    ++counters.closed;
    return conn;
  }

  // A new libpq connection, or nullptr with the error in `error`. Runs without the mutex.
  // Non-blocking libpq (PQconnectStartParams + PQconnectPoll) waited on with poll(), so the
  // deadline is kept on the pool's clock to the millisecond whatever the network does: a
  // black-holed server costs connect_timeout, not the kernel's TCP retry time.
  PGconn* connect(std::string& error) const {
    // Defaults first: the expanded conninfo (dbname, last) overrides them.
    static const char* const kKeywords[] = {"application_name", "dbname", nullptr};
    const char* values[] = {"poolsim", conninfo_.c_str(), nullptr};
    PGconn* conn = PQconnectStartParams(kKeywords, values, 1);
    if (conn == nullptr) {
      error = "libpq: out of memory";
      return nullptr;
    }
    const std::optional<Instant> deadline =
        connect_timeout_ ? std::optional<Instant>(steady_now() + *connect_timeout_) : std::nullopt;
    PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && polling != PGRES_POLLING_OK &&
           polling != PGRES_POLLING_FAILED) {
      const auto events = static_cast<short>(polling == PGRES_POLLING_READING ? POLLIN : POLLOUT);
      if (!wait_socket(conn, events, deadline)) {
        error = "connection to the server timed out after " + format_duration(*connect_timeout_) +
                " (connect_timeout)";
        PQfinish(conn);
        return nullptr;
      }
      polling = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
      error = PQerrorMessage(conn);
      PQfinish(conn);
      return nullptr;
    }
    return conn;
  }

  // Pre-ping and reset-on-return: one statement each, with the connect deadline. A round trip
  // that has not finished by then is a disconnect (ping) or a failed reset, and the core closes
  // the connection: through a black hole whose far end still acknowledges bytes (a proxy, a
  // middlebox) the kernel never gives up, and a blocking PQexec would hang the checkout or the
  // release forever.
  PingOutcome ping(PGconn* conn, std::string& error) const {
    switch (exec(conn, "SELECT 1", PGRES_TUPLES_OK, error)) {
      case Exec::kOk: return PingOutcome::kOk;
      case Exec::kTimedOut: return PingOutcome::kDisconnect;
      case Exec::kFailed: break;
    }
    return PQstatus(conn) == CONNECTION_BAD ? PingOutcome::kDisconnect : PingOutcome::kError;
  }
  ResetOutcome reset(PGconn* conn, ResetKind kind) const {
    std::string error;
    return exec(conn, kind == ResetKind::kCommit ? "COMMIT" : "ROLLBACK", PGRES_COMMAND_OK,
                error) == Exec::kOk
               ? ResetOutcome::kOk
               : ResetOutcome::kFailed;
  }

  bool closed = false;  // the PgPool is gone; handles still out close their connections

 private:
  // Waits until the connection's socket is ready for `events` (or poll() fails: libpq then
  // finds out what is wrong); false once the deadline (nullopt: none) has passed.
  static bool wait_socket(PGconn* conn, short events, std::optional<Instant> deadline) {
    for (;;) {
      int wait_ms = -1;
      if (deadline) {
        const Duration left = *deadline - steady_now();
        if (left.count() <= 0) return false;
        wait_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      }
      pollfd fd{PQsocket(conn), events, 0};
      const int ready = ::poll(&fd, 1, wait_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready != 0) return true;
    }
  }

  enum class Exec { kOk, kFailed, kTimedOut };
  // PQexec with the connect deadline: PQsendQuery, then PQconsumeInput on poll() until the last
  // result. kFailed (error set) unless every result has the expected status; on kTimedOut the
  // statement is still in flight and the connection must be closed.
  Exec exec(PGconn* conn, const char* sql, ExecStatusType expected, std::string& error) const {
    const std::optional<Instant> deadline =
        connect_timeout_ ? std::optional<Instant>(steady_now() + *connect_timeout_) : std::nullopt;
    if (PQsendQuery(conn, sql) == 0) {
      error = PQerrorMessage(conn);
      return Exec::kFailed;
    }
    bool ok = true;
    for (;;) {
      while (PQisBusy(conn) != 0) {
        if (!wait_socket(conn, POLLIN, deadline)) {
          error = "no answer from the server after " + format_duration(*connect_timeout_) +
                  " (connect_timeout)";
          return Exec::kTimedOut;
        }
        if (PQconsumeInput(conn) == 0) {  // the connection is gone (or libpq is out of memory)
          error = PQerrorMessage(conn);
          return Exec::kFailed;
        }
      }
      PGresult* result = PQgetResult(conn);
      if (result == nullptr) break;
      if (PQresultStatus(result) != expected) ok = false;
      PQclear(result);
    }
    if (!ok) error = PQerrorMessage(conn);
    return ok ? Exec::kOk : Exec::kFailed;
  }

  void drain(Request* self, Work& work) {
    while (std::optional<Action> action = core_.poll_action()) {
      std::visit(Overloaded{
                     [&](const OpenConnection& a) { answer(for_request(a.request), a, self); },
                     [&](const Ping& a) { answer(for_request(a.request), a, self); },
                     [&](const Grant& a) { answer(a.request, a, self); },
                     [&](const Fail& a) { answer(a.request, a, self); },
                     [&](const CloseConnection& a) { work.close(remove_conn(a.conn)); },
                     [&](const Reset& a) {
                       PGconn* c = conn(a.conn);
                       if (PQtransactionStatus(c) == PQTRANS_IDLE) {
                         // Nothing to roll back (psycopg2 skips it too): no I/O, answer now.
                         core_.handle(now(), ResetDone{a.slot, a.conn, ResetOutcome::kOk});
                       } else {
                         work.reset = a;
                         work.reset_conn = c;
                       }
                     },
                     [&](const Notify&) {},
                 },
                 *action);
    }
  }

  // The real pool runs QueuePool and NullPool, whose connects and pings are all some
  // request's (background work of a pool of its own is a simulator policy so far).
  static RequestId for_request(const std::optional<RequestId>& id) {
    if (!id) broken("the core asked for background work the real pool does not do");
    return *id;
  }

  void answer(RequestId id, const Answer& answer, Request* self) {
    if (self != nullptr && self->id == id) {
      if (self->answer) broken("two answers for one request");
      self->answer = answer;
      return;
    }
    for (Request* r = requests_; r != nullptr; r = r->next) {
      if (r->id == id) {
        if (r->answer) broken("two answers for one request");
        r->answer = answer;
        r->wake.notify_one();
        return;
      }
    }
    broken("the core answered a request nobody is waiting for");
  }

  std::string conninfo_;
  std::optional<Duration> connect_timeout_;
  PoolCore core_;
  Instant last_now_ = kNever;
  std::uint64_t last_request_ = 0;
  std::uint64_t last_conn_ = 0;
  std::unordered_map<ConnId, PGconn*> conns_;
  Request* requests_ = nullptr;
};

}  // namespace detail

using detail::Answer;
using detail::PoolState;
using detail::Request;
using detail::Work;

PgPool::PgPool(std::string conninfo, PoolConfig config, std::optional<Duration> connect_timeout)
    : state_(std::make_shared<PoolState>(std::move(conninfo), config, connect_timeout)) {}

PgPool::~PgPool() {
  Work work;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    state_->handle(Disposed{}, nullptr, work);
  }
  work.run_closes();
}

PgPool::Handle PgPool::checkout() {
  PoolState& s = *state_;
  Request self;
  Work work;
  std::string error;
  PoolError::Kind error_kind = PoolError::Kind::kConnectFailed;
  std::unique_lock lock(s.mutex);
  s.link(self);
  const Instant start = s.handle(CheckoutRequested{self.id}, &self, work);
  std::optional<Instant> deadline;
  if (const auto& timeout = s.core().config().timeout; timeout && timeout->count() > 0) {
    deadline = start + *timeout;
  }
  for (;;) {
    if (!self.answer) {
      if (deadline) {
        if (self.wake.wait_until(lock, PoolState::to_steady(*deadline)) ==
                std::cv_status::timeout &&
            !self.answer) {
          s.handle(WaitExpired{self.id}, &self, work);
        }
      } else {
        self.wake.wait(lock);
      }
      continue;
    }
    const Answer answer = *std::exchange(self.answer, std::nullopt);
    std::optional<Handle> granted = std::visit(
        Overloaded{
            [&](const Grant& a) -> std::optional<Handle> {
              PGconn* conn = s.conn(a.conn);
              s.unlink(self);
              lock.unlock();
              work.run_closes();
              return Handle(state_, a.slot, a.conn, conn);
            },
            [&](const Fail& a) -> std::optional<Handle> {
              s.unlink(self);
              std::string message;
              PoolError::Kind kind = PoolError::Kind::kTimeout;
              switch (a.failure) {
                case Failure::kTimeout:
                  message = timeout_message(s.core().config(), a.overflow);
                  break;
                case Failure::kNegativeTimeout:
                  message = "pool.timeout is negative: every checkout at the limit fails";
                  break;
                case Failure::kTooManyRequests:  // psycopg_pool's; the real pool runs SQLAlchemy's
                  throw std::logic_error("PgPool: a SQLAlchemy pool failed with TooManyRequests");
                case Failure::kConnectFailed:
                  kind = error_kind;
                  message = error;
                  break;
                case Failure::kPingError:
                  kind = PoolError::Kind::kPingError;
                  message = error;
                  break;
              }
              lock.unlock();
              work.run_closes();
              throw PoolError(kind, message);
            },
            [&](const OpenConnection& a) -> std::optional<Handle> {
              lock.unlock();
              work.run_closes();
              PGconn* conn = s.connect(error);
              const bool ok = conn != nullptr;
              if (!ok) {
                error_kind = detail::too_many_clients(error) ? PoolError::Kind::kTooManyConnections
                                                             : PoolError::Kind::kConnectFailed;
              }
              lock.lock();
              if (ok) {
                s.handle(ConnectSucceeded{a.slot, s.add_conn(conn)}, &self, work);
              } else {
                s.handle(ConnectFailed{a.slot, static_cast<int>(error_kind)}, &self, work);
              }
              return std::nullopt;
            },
            [&](const Ping& a) -> std::optional<Handle> {
              PGconn* conn = s.conn(a.conn);
              lock.unlock();
              work.run_closes();
              const PingOutcome outcome = s.ping(conn, error);
              lock.lock();
              ++s.counters.pings;
              if (outcome != PingOutcome::kOk) ++s.counters.ping_failures;
              s.handle(PingResult{a.slot, outcome, 0}, &self, work);
              return std::nullopt;
            },
        },
        answer);
    if (granted) return std::move(*granted);
  }
}

// Check-in, invalidation and disconnect of a granted connection.
namespace {
void give_back(PoolState& s, const Event& event, ConnId conn_id) {
  Work work;
  {
    std::lock_guard lock(s.mutex);
    if (s.closed) {
      work.close(s.remove_conn(conn_id));
    } else {
      s.handle(event, nullptr, work);
    }
  }
  work.run_closes();
  if (!work.reset) return;
  const Reset reset = *work.reset;
  const ResetOutcome outcome = s.reset(work.reset_conn, reset.kind);
  work.reset.reset();
  {
    std::lock_guard lock(s.mutex);
    ++s.counters.resets;
    if (s.closed) {  // the pool went away during the reset: nobody will check it out again
      work.close(s.remove_conn(reset.conn));
    } else {
      s.handle(ResetDone{reset.slot, reset.conn, outcome}, nullptr, work);
    }
  }
  work.run_closes();
}
}  // namespace

void PgPool::Handle::release() {
  if (!state_) return;
  // libpq knows when the socket broke under the caller's query: that is the disconnect
  // SQLAlchemy's Engine detects in the error, with the same pool-wide invalidation.
  if (PQstatus(conn_) == CONNECTION_BAD) return disconnected();
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, Returned{slot_}, conn_id_);
}

void PgPool::Handle::invalidate() {
  if (!state_) return;
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, Invalidated{slot_, Invalidation::kHard}, conn_id_);
}

void PgPool::Handle::disconnected() {
  if (!state_) return;
  const std::shared_ptr<PoolState> state = std::move(state_);
  conn_ = nullptr;
  give_back(*state, DisconnectDetected{slot_}, conn_id_);
}

PgPool::Handle::Handle(Handle&& other) noexcept
    : state_(std::move(other.state_)),
      slot_(other.slot_),
      conn_id_(other.conn_id_),
      conn_(std::exchange(other.conn_, nullptr)) {}

PgPool::Handle& PgPool::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    slot_ = other.slot_;
    conn_id_ = other.conn_id_;
    conn_ = std::exchange(other.conn_, nullptr);
  }
  return *this;
}

PoolStatus PgPool::status() const {
  std::lock_guard lock(state_->mutex);
  return state_->core().status();
}

PgPool::Counters PgPool::counters() const {
  std::lock_guard lock(state_->mutex);
  return state_->counters;
}

std::size_t PgPool::open_connections() const {
  std::lock_guard lock(state_->mutex);
  return state_->open_connections();
}

const PoolConfig& PgPool::config() const { return state_->core().config(); }

}  // namespace poolsim::real_pool
