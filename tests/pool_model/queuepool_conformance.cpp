// queuepool_conformance: replays QueuePool conformance scenarios against poolsim's PoolCore and
// prints the trace document that ../shared/conformance/run_conformance.py --compare reads.
//
//   build/bin/queuepool_conformance [--compat 1.4|2.0] SCENARIOS.json > TRACES.json
//
// The replay plays the harness's part: a fake database whose connections are numbered 1, 2, 3
// in the order connects succeed and that can fail, hold, kill, or break pings and rollbacks; a
// scenario clock that moves only on `advance`; and actors (checkout_async) as concurrent
// requests. The harness waits for connections in real time, which does not move the scenario
// clock, so the replay keeps a second clock for waits that moves only while the script blocks
// (a main checkout that has to wait, or an await of a waiting actor). Waiters then expire in
// the order they started, through WaitExpired.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "pool_model/overloaded.hpp"
#include "pool_model/pool_core.hpp"
#include "pool_model/static_core.hpp"

namespace poolsim {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "queuepool-conformance/1";
// How far the scenario clock and the wait clock may go: far inside the int64 nanoseconds of
// Instant (292 years), so that adding a timeout of up to 1e9 s can never overflow.
constexpr double kMaxClockSeconds = 4e9;

struct ScenarioError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- reading scenario JSON with errors that name the field ----------------------------------

const json& field(const json& object, const char* key) {
  if (!object.contains(key)) throw ScenarioError(std::string("missing field \"") + key + "\"");
  return object.at(key);
}

std::string string_field(const json& object, const char* key) {
  const json& value = field(object, key);
  if (!value.is_string() || value.get<std::string>().empty()) {
    throw ScenarioError(std::string("field \"") + key + "\" = " + value.dump() +
                        ": must be a non-empty string");
  }
  return value.get<std::string>();
}

std::int64_t int_field(const json& object, const char* key, std::int64_t min) {
  const json& value = field(object, key);
  if (!value.is_number_integer() || value.get<std::int64_t>() < min) {
    throw ScenarioError(std::string("field \"") + key + "\" = " + value.dump() +
                        ": must be a whole number >= " + std::to_string(min));
  }
  return value.get<std::int64_t>();
}

double seconds_field(const json& object, const char* key) {
  const json& value = field(object, key);
  if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 0 ||
      value.get<double>() > 1e9) {
    throw ScenarioError(std::string("field \"") + key + "\" = " + value.dump() +
                        ": must be a number of seconds from 0 to 1e9");
  }
  return value.get<double>();
}

Duration to_duration(double seconds) {
  return Duration(static_cast<std::int64_t>(std::llround(seconds * 1e9)));
}

void require_only(const json& object, std::initializer_list<const char*> allowed,
                  const char* what) {
  for (const auto& item : object.items()) {
    bool known = false;
    for (const char* key : allowed) known = known || item.key() == key;
    if (!known) {
      std::string list;
      for (const char* key : allowed) list += std::string(list.empty() ? "" : ", ") + key;
      throw ScenarioError(std::string("unknown ") + what + " field \"" + item.key() +
                          "\" (allowed: " + list + ")");
    }
  }
}

PoolConfig pool_config(const json& cfg, Compat compat) {
  require_only(cfg,
               {"pool_size", "max_overflow", "timeout", "recycle", "pre_ping", "use_lifo",
                "reset_on_return", "policy"},
               "pool");
  PoolConfig config;
  // "policy" is the project's extension (record_policies.py): SQLAlchemy's other pool classes.
  if (cfg.contains("policy")) {
    const json& policy = cfg.at("policy");
    if (policy == "null") {
      config.policy = Policy::kNull;
    } else if (policy == "static") {
      config.policy = Policy::kStatic;
    } else if (policy != "queuepool") {
      throw ScenarioError("field \"policy\" = " + policy.dump() +
                          ": must be \"queuepool\", \"null\" or \"static\"");
    }
  }
  config.compat = compat;
  config.events = PoolEvents::kOn;
  config.pool_size = static_cast<int>(int_field(cfg, "pool_size", 0));
  config.max_overflow = static_cast<int>(int_field(cfg, "max_overflow", -1));
  if (cfg.at("pool_size").get<std::int64_t>() > 1'000'000 ||
      cfg.at("max_overflow").get<std::int64_t>() > 1'000'000) {
    throw ScenarioError("pool_size and max_overflow must be at most 1000000");
  }
  const json& timeout = field(cfg, "timeout");
  if (!timeout.is_null() && (!timeout.is_number() || !std::isfinite(timeout.get<double>()) ||
                             std::abs(timeout.get<double>()) > 1e9)) {
    throw ScenarioError("field \"timeout\" = " + timeout.dump() +
                        ": must be null (wait forever) or a number of seconds up to 1e9");
  }
  config.timeout = timeout.is_null() ? std::nullopt
                                     : std::optional<Duration>(to_duration(timeout.get<double>()));
  const json& recycle = field(cfg, "recycle");
  if (!recycle.is_number() || (recycle.get<double>() < 0 && recycle.get<double>() != -1)) {
    throw ScenarioError("field \"recycle\" = " + recycle.dump() +
                        ": must be -1 (never) or a number of seconds >= 0");
  }
  if (recycle.get<double>() >= 0) config.recycle = to_duration(seconds_field(cfg, "recycle"));
  for (const char* key : {"pre_ping", "use_lifo"}) {
    if (!field(cfg, key).is_boolean()) {
      throw ScenarioError(std::string("field \"") + key + "\" = " + cfg.at(key).dump() +
                          ": must be true or false");
    }
  }
  config.pre_ping = cfg.at("pre_ping").get<bool>();
  config.order = cfg.at("use_lifo").get<bool>() ? QueueOrder::kLifo : QueueOrder::kFifo;
  const json& reset = field(cfg, "reset_on_return");
  if (reset == "rollback") {
    config.reset_on_return = ResetOnReturn::kRollback;
  } else if (reset == "commit") {
    config.reset_on_return = ResetOnReturn::kCommit;
  } else if (reset == "none") {
    config.reset_on_return = ResetOnReturn::kNone;
  } else {
    throw ScenarioError("field \"reset_on_return\" = " + reset.dump() +
                        ": must be \"rollback\", \"commit\" or \"none\"");
  }
  if (auto problem = validate(config)) throw ScenarioError(*problem);
  return config;
}

// SQLAlchemy's pool classes on poolsim's cores: QueuePool and NullPool are PoolCore, StaticPool
// is StaticCore. Both have the same driver interface.
class ReplayPool {
 public:
  explicit ReplayPool(const PoolConfig& config)
      : core_(config.policy == Policy::kStatic ? Core(std::in_place_type<StaticCore>, config)
                                               : Core(std::in_place_type<PoolCore>, config)) {}
  void handle(Instant now, const Event& event) {
    std::visit([&](auto& core) { core.handle(now, event); }, core_);
  }
  void check_invariants() const {
    std::visit([](const auto& core) { core.check_invariants(); }, core_);
  }
  std::optional<Action> poll_action() {
    return std::visit([](auto& core) { return core.poll_action(); }, core_);
  }
  RecordId record_of(SlotId slot) const {
    return std::visit([&](const auto& core) { return core.record_of(slot); }, core_);
  }
  PoolStatus status() const {
    return std::visit([](const auto& core) { return core.status(); }, core_);
  }
  const PoolConfig& config() const {
    return std::visit([](const auto& core) -> const PoolConfig& { return core.config(); }, core_);
  }

 private:
  using Core = std::variant<PoolCore, StaticCore>;
  Core core_;
};

// ---- one scenario ----------------------------------------------------------------------------

class Replay {
 public:
  Replay(const json& defaults, double clock_start, const json& scenario, Compat compat)
      : scenario_(scenario), clock_(clock_start) {
    cfg_ = defaults;
    if (scenario.contains("pool")) {
      if (!scenario.at("pool").is_object()) throw ScenarioError("\"pool\" must be an object");
      for (const auto& item : scenario.at("pool").items()) cfg_[item.key()] = item.value();
    }
    config_ = pool_config(cfg_, compat);
    pools_.push_back(std::make_unique<ReplayPool>(config_));
  }

  json run() {
    const json& steps = field(scenario_, "steps");
    if (!steps.is_array()) throw ScenarioError("\"steps\" must be a list");
    json steps_out = json::array();
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const json& step = steps[i];
      try {
        if (!step.is_object()) throw ScenarioError("a step must be an object");
        step_events_ = json::array();
        json result = do_step(step);
        json entry = {{"i", i}};
        for (const auto& item : step.items()) entry[item.key()] = item.value();
        if (!result.is_null()) entry["result"] = result;
        entry["events"] = step_events_;
        entry["status"] = status_json(*pools_.back());
        if (pools_.size() > 1) {
          json old = json::array();
          for (std::size_t p = 0; p + 1 < pools_.size(); ++p)
            old.push_back(status_json(*pools_[p]));
          entry["old_pool_status"] = old;
        }
        steps_out.push_back(entry);
      } catch (const std::exception& e) {
        std::string op = step.is_object() && step.contains("op") ? step.at("op").dump() : "?";
        throw ScenarioError("step " + std::to_string(i) + " (op " + op + "): " + e.what());
      }
    }
    json open = json::array();
    for (const auto& [id, conn] : conns_) {
      if (!conn.closed) open.push_back(id);
    }
    return json{{"name", scenario_.at("name")},
                {"pool", cfg_},
                {"steps", steps_out},
                {"final",
                 {{"status", status_json(*pools_.back())},
                  {"open_conns", open},
                  {"event_counts", event_counts_}}}};
  }

 private:
  struct Conn {
    bool closed = false;
    bool dead = false;
    bool ping_error = false;
    bool rollback_error = false;
  };
  struct Request {
    std::string actor;
    std::size_t pool = 0;
    json result;  // null until Grant or Fail
    SlotId slot{};
    ConnId conn{};
    bool waiting = false;  // in the pool's queue of waiters
    bool connect_pending = false;
    std::optional<std::int64_t> wait_deadline;  // on the wait clock, ns
    std::uint64_t wait_order = 0;
    bool claimed = false;  // its handle was stored in refs (checkout_async done, or await)
  };
  struct Handle {
    std::size_t pool;
    SlotId slot;
    ConnId conn;
    bool detached = false;
  };
  struct PendingConnect {
    std::size_t pool;
    SlotId slot;
    RequestId request;
  };

  Instant now() const { return Instant(to_duration(clock_)); }

  json status_json(const ReplayPool& pool) const {
    if (pool.config().policy == Policy::kNull) return json{{"status", "NullPool"}};  // N3
    if (pool.config().policy == Policy::kStatic) return json{{"status", "StaticPool"}};  // S5
    const PoolStatus s = pool.status();
    return json{{"size", s.size},
                {"checkedin", s.checkedin},
                {"checkedout", s.checkedout},
                {"overflow", s.overflow}};
  }

  void record(const std::string& actor, const std::string& name, json args = json::array()) {
    json event = json::array({actor, name});
    for (auto& arg : args) event.push_back(arg);
    step_events_.push_back(event);
    event_counts_[name] = event_counts_.value(name, 0) + 1;
  }

  std::string actor_of(std::optional<RequestId> request) const {
    if (!request) return "main";
    return requests_.at(static_cast<std::uint64_t>(*request)).actor;
  }

  // The harness numbers records in the order they are first mentioned.
  json slot_number(std::size_t pool, std::optional<RecordId> record) {
    if (!record) return nullptr;
    const auto key = std::make_pair(pool, static_cast<std::uint64_t>(*record));
    auto it = slot_numbers_.find(key);
    if (it == slot_numbers_.end()) {
      it = slot_numbers_.emplace(key, static_cast<int>(slot_numbers_.size()) + 1).first;
    }
    return it->second;
  }

  static json conn_json(std::optional<ConnId> conn) {
    if (!conn) return nullptr;
    return static_cast<std::uint64_t>(*conn);
  }

  static const char* exception_name(InvalidateReason reason) {
    switch (reason) {
      case InvalidateReason::kExplicit: return nullptr;
      case InvalidateReason::kPrePingDisconnect: return "InvalidatePoolError";
      case InvalidateReason::kPingError: return "ProgrammingError";
      case InvalidateReason::kDisconnect: return "OperationalError";
      case InvalidateReason::kResetFailed: return "OperationalError";
    }
    return nullptr;
  }

  // ---- driving the core ----

  void feed(std::size_t pool, const Event& event) {
    pools_[pool]->handle(now(), event);
    pools_[pool]->check_invariants();
    drain(pool);
  }

  // Carries out the actions of one input in order; an action whose answer comes back at once
  // (a connect, a ping, a reset) has all its consequences carried out before the next action,
  // as the synchronous Python pool does.
  void drain(std::size_t pool) {
    std::vector<Action> batch;
    while (auto action = pools_[pool]->poll_action()) batch.push_back(std::move(*action));
    for (const Action& action : batch) execute(pool, action);
  }

  Request& request(RequestId id) { return requests_.at(static_cast<std::uint64_t>(id)); }

  void touched(std::optional<RequestId> id) {
    if (id) request(*id).waiting = false;
  }

  void execute(std::size_t pool, const Action& action) {
    std::visit(
        Overloaded{
            [&](const OpenConnection& a) {
              touched(a.request);
              const std::string actor = actor_of(a.request);
              if (hold_next_ > 0) {
                --hold_next_;
                record(actor, "db.connect_pending");
                pending_.push_back(PendingConnect{pool, a.slot, a.request.value()});
                request(a.request.value()).connect_pending = true;
              } else {
                connect(pool, a.slot, a.request.value(), fail_next_ > 0);
              }
            },
            [&](const CloseConnection& a) {
              touched(a.by);
              record(actor_of(a.by), "db.close",
                     {static_cast<std::uint64_t>(a.conn),
                      a.kind == CloseKind::kClose ? "close" : "terminate"});
              conn(a.conn).closed = true;
            },
            [&](const Ping& a) {
              touched(a.request);
              Conn& c = conn(a.conn);
              PingOutcome outcome = PingOutcome::kOk;
              if (c.dead) {
                outcome = PingOutcome::kDisconnect;
              } else if (c.ping_error) {
                c.ping_error = false;
                outcome = PingOutcome::kError;
              }
              const char* names[] = {"ok", "disconnect", "error"};
              record(actor_of(a.request), "db.ping",
                     {static_cast<std::uint64_t>(a.conn), names[static_cast<int>(outcome)]});
              feed(pool, PingResult{a.slot, outcome, 0});
            },
            [&](const Reset& a) {
              Conn& c = conn(a.conn);
              ResetOutcome outcome = ResetOutcome::kOk;
              if (a.kind == ResetKind::kRollback) {
                record("main", "db.rollback", {static_cast<std::uint64_t>(a.conn)});
                if (c.rollback_error) {
                  c.rollback_error = false;
                  outcome = ResetOutcome::kFailed;
                }
              } else {
                record("main", "db.commit", {static_cast<std::uint64_t>(a.conn)});
              }
              feed(pool, ResetDone{a.slot, a.conn, outcome});
            },
            [&](const Grant& a) {
              touched(a.request);
              Request& r = request(a.request);
              r.connect_pending = false;
              r.slot = a.slot;
              r.conn = a.conn;
              r.result = {{"ok", true},
                          {"conn", static_cast<std::uint64_t>(a.conn)},
                          {"slot", slot_number(pool, pools_[pool]->record_of(a.slot))}};
            },
            [&](const Fail& a) {
              touched(a.request);
              Request& r = request(a.request);
              r.connect_pending = false;
              switch (a.failure) {
                case Failure::kTimeout:
                  r.result = error("TimeoutError", timeout_message(config_, a.overflow));
                  break;
                case Failure::kConnectFailed:
                  r.result = error("OperationalError", "could not connect to server (simulated)");
                  break;
                case Failure::kPingError:
                  r.result = error("ProgrammingError", "ping failed (simulated, not a disconnect)");
                  break;
                case Failure::kNegativeTimeout:
                  r.result = error("ValueError", "'timeout' must be a positive number");
                  break;
                case Failure::kTooManyRequests:  // psycopg_pool's; no SQLAlchemy pool raises it
                  throw ScenarioError("the core failed a checkout with TooManyRequests");
              }
            },
            [&](const Notify& a) {
              touched(a.by);
              const std::string name = std::string("pool.") + to_string(a.event);
              const json slot = slot_number(pool, a.record);
              switch (a.event) {
                case PoolEvent::kInvalidate:
                case PoolEvent::kSoftInvalidate: {
                  const char* exc = a.reason ? exception_name(*a.reason) : nullptr;
                  record(actor_of(a.by), name,
                         {conn_json(a.conn), slot, exc ? json(exc) : json(nullptr)});
                  break;
                }
                case PoolEvent::kCloseDetached:
                  record(actor_of(a.by), name, {conn_json(a.conn)});
                  break;
                default: record(actor_of(a.by), name, {conn_json(a.conn), slot});
              }
            },
        },
        action);
  }

  static json error(const char* type, const std::string& message) {
    return json{{"ok", false}, {"error", type}, {"message", message}};
  }

  void connect(std::size_t pool, SlotId slot, RequestId req, bool fail) {
    const std::string actor = actor_of(req);
    if (fail) {
      if (fail_next_ > 0) --fail_next_;
      record(actor, "db.connect_failed");
      feed(pool, ConnectFailed{slot, 0});
      return;
    }
    const std::uint64_t id = next_conn_++;
    conns_[id] = Conn{};
    record(actor, "db.connect", {id});
    feed(pool, ConnectSucceeded{slot, ConnId{id}});
  }

  Conn& conn(ConnId id) {
    auto it = conns_.find(static_cast<std::uint64_t>(id));
    if (it == conns_.end())
      throw ScenarioError("no connection #" + std::to_string(static_cast<std::uint64_t>(id)));
    return it->second;
  }

  RequestId start_checkout(const std::string& actor) {
    if (static_cast<double>(wait_clock_) > kMaxClockSeconds * 1e9) {
      throw ScenarioError("the script's waits add up to more than 4e9 seconds");
    }
    const RequestId id{next_request_++};
    Request& r = requests_[static_cast<std::uint64_t>(id)];
    r.actor = actor;
    r.pool = pools_.size() - 1;
    feed(r.pool, CheckoutRequested{id});
    if (r.result.is_null() && !r.connect_pending) {
      r.waiting = true;
      r.wait_order = next_wait_order_++;
      if (config_.timeout) r.wait_deadline = wait_clock_ + config_.timeout->count();
    }
    return id;
  }

  // The script blocks until wait-clock time `until`: waiters whose time is up by then expire,
  // earliest deadline first (ties: the one that started waiting first).
  void block_until(std::int64_t until) {
    for (;;) {
      Request* next = nullptr;
      RequestId next_id{};
      for (auto& [id, r] : requests_) {
        if (!r.waiting || !r.wait_deadline || *r.wait_deadline > until) continue;
        if (!next || std::make_pair(*r.wait_deadline, r.wait_order) <
                         std::make_pair(*next->wait_deadline, next->wait_order)) {
          next = &r;
          next_id = RequestId{id};
        }
      }
      if (!next) break;
      wait_clock_ = std::max(wait_clock_, *next->wait_deadline);
      next->waiting = false;
      feed(next->pool, WaitExpired{next_id});
    }
    wait_clock_ = std::max(wait_clock_, until);
  }

  // Blocks the script until request `id` has its answer, as the harness's thread join would.
  void wait_for(RequestId id, const std::string& who) {
    Request& r = request(id);
    if (r.result.is_null() && r.waiting) {
      if (!r.wait_deadline) {
        throw ScenarioError(who + " waits forever (timeout null) and nothing can wake it");
      }
      block_until(*r.wait_deadline);
    }
    if (r.result.is_null()) {
      throw ScenarioError(who + " is parked in a held connect: release_connect it first");
    }
  }

  std::string ref_name(const json& step) { return string_field(step, "ref"); }

  Handle& handle(const std::string& name) {
    auto it = refs_.find(name);
    if (it == refs_.end())
      throw ScenarioError("unknown or already returned handle \"" + name + "\"");
    return it->second;
  }

  void claim(const std::string& name, RequestId id) {
    Request& r = request(id);
    if (r.claimed || !r.result.value("ok", false)) return;
    r.claimed = true;
    refs_[name] = Handle{r.pool, r.slot, r.conn, false};
  }

  void new_name(const std::string& name) {
    if (refs_.count(name) || actors_.count(name)) {
      throw ScenarioError("the name \"" + name + "\" is already in use");
    }
  }

  json do_step(const json& step) {
    const std::string op = string_field(step, "op");
    if (op == "checkout") {
      require_only(step, {"op", "as"}, "checkout");
      const std::string name = string_field(step, "as");
      new_name(name);
      const RequestId id = start_checkout("main");
      wait_for(id, "the main checkout");
      const json result = request(id).result;
      if (result.at("ok").get<bool>()) {
        request(id).claimed = true;
        refs_[name] = Handle{request(id).pool, request(id).slot, request(id).conn, false};
      }
      return result;
    }
    if (op == "checkout_async") {
      require_only(step, {"op", "as"}, "checkout_async");
      const std::string name = string_field(step, "as");
      new_name(name);
      const RequestId id = start_checkout(name);
      actors_[name] = id;
      Request& r = request(id);
      if (!r.result.is_null()) {
        claim(name, id);
        json result = r.result;
        result["state"] = "done";
        return result;
      }
      return json{{"state", "pending"}, {"waiting_for", r.connect_pending ? "connect" : "queue"}};
    }
    if (op == "await") {
      require_only(step, {"op", "ref"}, "await");
      const std::string name = ref_name(step);
      auto it = actors_.find(name);
      if (it == actors_.end()) throw ScenarioError("no actor \"" + name + "\"");
      wait_for(it->second, "actor \"" + name + "\"");
      claim(name, it->second);
      return request(it->second).result;
    }
    if (op == "checkin") {
      require_only(step, {"op", "ref"}, "checkin");
      const std::string name = ref_name(step);
      const Handle h = handle(name);
      refs_.erase(name);
      if (h.detached) {
        feed(h.pool, DetachedReturned{h.conn});
      } else {
        feed(h.pool, Returned{h.slot});
      }
      return nullptr;
    }
    if (op == "invalidate") {
      require_only(step, {"op", "ref", "soft"}, "invalidate");
      const std::string name = ref_name(step);
      const Handle h = handle(name);
      bool soft = false;
      if (step.contains("soft")) {
        if (!step.at("soft").is_boolean())
          throw ScenarioError("field \"soft\" must be true or false");
        soft = step.at("soft").get<bool>();
      }
      if (!soft) refs_.erase(name);
      // A detached handle has no record: invalidating it touches nothing in the pool.
      if (!h.detached) {
        feed(h.pool, Invalidated{h.slot, soft ? Invalidation::kSoft : Invalidation::kHard});
      }
      return nullptr;
    }
    if (op == "detach") {
      require_only(step, {"op", "ref"}, "detach");
      Handle& h = handle(ref_name(step));
      if (!h.detached) {
        h.detached = true;
        feed(h.pool, Detached{h.slot});
      }
      return nullptr;
    }
    if (op == "engine_disconnect") {
      require_only(step, {"op", "ref"}, "engine_disconnect");
      const std::string name = ref_name(step);
      const Handle h = handle(name);
      refs_.erase(name);
      if (h.detached) {
        feed(h.pool, PoolInvalidated{});
      } else {
        feed(h.pool, DisconnectDetected{h.slot});
      }
      return nullptr;
    }
    if (op == "advance") {
      require_only(step, {"op", "seconds"}, "advance");
      const double seconds = seconds_field(step, "seconds");
      if (clock_ + seconds > kMaxClockSeconds) {
        throw ScenarioError("field \"seconds\" = " + step.at("seconds").dump() +
                            ": the scenario clock would pass 4e9 seconds");
      }
      clock_ += seconds;
      return nullptr;
    }
    if (op == "kill" || op == "ping_error" || op == "rollback_error") {
      require_only(step, {"op", "conn"}, op.c_str());
      Conn& c = conn(ConnId{static_cast<std::uint64_t>(int_field(step, "conn", 1))});
      if (op == "kill") c.dead = true;
      if (op == "ping_error") c.ping_error = true;
      if (op == "rollback_error") c.rollback_error = true;
      return nullptr;
    }
    if (op == "fail_connects" || op == "hold_connects") {
      require_only(step, {"op", "count"}, op.c_str());
      const std::int64_t count = int_field(step, "count", 0);
      (op == "fail_connects" ? fail_next_ : hold_next_) += count;
      return nullptr;
    }
    if (op == "release_connect") {
      require_only(step, {"op", "outcome"}, "release_connect");
      const std::string outcome = step.contains("outcome") ? string_field(step, "outcome") : "ok";
      if (outcome != "ok" && outcome != "fail") {
        throw ScenarioError("field \"outcome\" = \"" + outcome + "\": must be \"ok\" or \"fail\"");
      }
      if (pending_.empty()) throw ScenarioError("release_connect: nothing pending");
      const PendingConnect p = pending_.front();
      pending_.pop_front();
      request(p.request).connect_pending = false;
      const std::string actor = actor_of(p.request);
      // A released failure is the held attempt's own; it does not use up fail_connects.
      if (outcome == "fail") {
        record(actor, "db.connect_failed");
        feed(p.pool, ConnectFailed{p.slot, 0});
      } else {
        connect(p.pool, p.slot, p.request, false);
      }
      return json{{"actor", actor}};
    }
    if (op == "dispose") {
      require_only(step, {"op"}, "dispose");
      feed(pools_.size() - 1, Disposed{});
      return nullptr;
    }
    if (op == "engine_dispose") {
      require_only(step, {"op"}, "engine_dispose");
      feed(pools_.size() - 1, Disposed{});
      pools_.push_back(std::make_unique<ReplayPool>(config_));
      return nullptr;
    }
    if (op == "status") {
      require_only(step, {"op"}, "status");
      return nullptr;
    }
    throw ScenarioError("unknown op \"" + op +
                        "\" (allowed: checkout, checkin, invalidate, detach, engine_disconnect, "
                        "advance, kill, ping_error, rollback_error, fail_connects, hold_connects, "
                        "release_connect, checkout_async, await, dispose, engine_dispose, status)");
  }

  const json& scenario_;
  json cfg_;
  PoolConfig config_;
  std::vector<std::unique_ptr<ReplayPool>> pools_;  // the last is the engine's current pool
  double clock_;
  std::int64_t wait_clock_ = 0;
  std::map<std::uint64_t, Conn> conns_;
  std::uint64_t next_conn_ = 1;
  std::int64_t fail_next_ = 0;
  std::int64_t hold_next_ = 0;
  std::deque<PendingConnect> pending_;
  std::map<std::uint64_t, Request> requests_;
  std::uint64_t next_request_ = 1;
  std::uint64_t next_wait_order_ = 0;
  std::map<std::string, Handle> refs_;
  std::map<std::string, RequestId> actors_;
  std::map<std::pair<std::size_t, std::uint64_t>, int> slot_numbers_;
  json step_events_;
  json event_counts_ = json::object();
};

int usage(std::ostream& out, int status) {
  out << "usage: queuepool_conformance [--compat 1.4|2.0] SCENARIOS.json\n\n"
         "Replays QueuePool conformance scenarios (format queuepool-conformance/1) against\n"
         "poolsim's pool core and prints the trace document on stdout. Compare it with\n"
         "SQLAlchemy's reference traces:\n"
         "  run_conformance.py --compare expected/sqlalchemy-1.4.46.json TRACES.json\n\n"
         "  --compat 1.4|2.0   SQLAlchemy semantics to follow (default 2.0; they differ only\n"
         "                     for pool_size = 0)\n";
  return status;
}

int run(int argc, char** argv) {
  Compat compat = Compat::kSqlalchemy20;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return usage(std::cout, 0);
    if (arg == "--compat" || arg.rfind("--compat=", 0) == 0) {
      std::string value;
      if (arg == "--compat") {
        if (i + 1 >= argc) {
          std::cerr << "queuepool_conformance: --compat needs a value: 1.4 or 2.0\n";
          return 2;
        }
        value = argv[++i];
      } else {
        value = arg.substr(9);
      }
      if (value == "1.4") {
        compat = Compat::kSqlalchemy14;
      } else if (value == "2.0") {
        compat = Compat::kSqlalchemy20;
      } else {
        std::cerr << "queuepool_conformance: --compat = " << value << ": must be 1.4 or 2.0\n";
        return 2;
      }
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "queuepool_conformance: unknown option " << arg << " (see --help)\n";
      return 2;
    } else if (path.empty()) {
      path = arg;
    } else {
      std::cerr << "queuepool_conformance: one scenario file only (got " << path << " and " << arg
                << ")\n";
      return 2;
    }
  }
  if (path.empty()) return usage(std::cerr, 2);

  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "queuepool_conformance: " << path << ": cannot read the file\n";
    return 2;
  }
  json spec;
  try {
    spec = json::parse(in);
  } catch (const json::exception& e) {
    std::cerr << "queuepool_conformance: " << path << ": not valid JSON: " << e.what() << "\n";
    return 2;
  }
  json doc;
  std::string where = path;
  try {
    if (!spec.is_object() || spec.value("format", json()) != kFormat) {
      throw ScenarioError(std::string("\"format\" must be \"") + kFormat + "\"");
    }
    const json& defaults = field(spec, "defaults");
    if (!defaults.is_object()) throw ScenarioError("\"defaults\" must be an object");
    const double clock_start = seconds_field(spec, "clock_start");
    const json& scenarios = field(spec, "scenarios");
    if (!scenarios.is_array()) throw ScenarioError("\"scenarios\" must be a list");
    json traces = json::array();
    std::set<std::string> names;
    for (std::size_t i = 0; i < scenarios.size(); ++i) {
      where = path + ": scenario " + std::to_string(i);
      if (!scenarios[i].is_object()) throw ScenarioError("a scenario must be an object");
      const std::string name = string_field(scenarios[i], "name");
      where = path + ": scenario \"" + name + "\"";
      if (!names.insert(name).second) throw ScenarioError("the name is used twice");
      traces.push_back(Replay(defaults, clock_start, scenarios[i], compat).run());
    }
    doc = json{{"format", kFormat},
               {"generator", "build/bin/queuepool_conformance"},
               {"sqlalchemy_version", compat == Compat::kSqlalchemy14 ? "poolsim core, compat 1.4"
                                                                      : "poolsim core, compat 2.0"},
               {"clock_start", spec.at("clock_start")},
               {"scenarios", traces}};
  } catch (const std::exception& e) {
    std::cerr << "queuepool_conformance: " << where << ": " << e.what() << "\n";
    return 2;
  }
  std::cout << doc.dump(1) << "\n";
  return 0;
}

}  // namespace
}  // namespace poolsim

int main(int argc, char** argv) { return poolsim::run(argc, argv); }
