// Settings of one pool, spelled as in SQLAlchemy's create_engine() and poolsim's option table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "pool_model/time.hpp"

namespace poolsim {

enum class ResetOnReturn { kRollback, kCommit, kNone };
enum class QueueOrder { kFifo, kLifo };
// SQLAlchemy version whose semantics to follow. They differ only for pool_size = 0
// (2.0 ignores max_overflow there and reports overflow() as 0; SQLAlchemy issue #8523).
enum class Compat { kSqlalchemy14, kSqlalchemy20 };
// Whether the core reports SQLAlchemy's pool events (connect, checkout, checkin, ...) as
// Notify actions. The conformance replay and traces want them; the simulator does not.
enum class PoolEvents { kOff, kOn };
// pool.policy. kNull is SQLAlchemy's NullPool: the same records, checkout loop, pre-ping,
// recycle and reset as QueuePool, but every checkout opens a new connection and every return
// closes it; pool_size, max_overflow, timeout and use_lifo do not apply.
// kHikari is HikariCP's pool, a state machine of its own (hikari_core.hpp), kPsycopg
// psycopg_pool's ConnectionPool (psycopg_core.hpp), and kStatic SQLAlchemy's StaticPool, one
// record shared by every checkout (static_core.hpp): PoolCore refuses them. kPgbouncer is
// QueuePools whose connections go to pgbouncer (pgbouncer_core.hpp): a PoolCore takes it as
// kQueuePool only.
enum class Policy { kQueuePool, kNull, kHikari, kStatic, kPsycopg, kPgbouncer };

struct PoolConfig {
  int pool_size = 5;      // pool.size: idle connections kept; 0 = no limit
  int max_overflow = 10;  // pool.max_overflow: -1 = unlimited
  std::optional<Duration> timeout = std::chrono::seconds(30);  // pool.timeout; nullopt = forever
  std::optional<Duration> recycle;                             // pool.recycle; nullopt = never (-1)
  bool pre_ping = false;                                       // pool.pre_ping
  QueueOrder order = QueueOrder::kFifo;                        // pool.use_lifo
  ResetOnReturn reset_on_return = ResetOnReturn::kRollback;
  Compat compat = Compat::kSqlalchemy20;
  PoolEvents events = PoolEvents::kOff;
  Policy policy = Policy::kQueuePool;
};

// Refuses settings SQLAlchemy would not run with, or would mis-run (a negative pool_size,
// max_overflow below -1, a negative recycle). Returns one line naming the key, the value and
// what is allowed, or nullopt when the config is usable. A negative timeout is SQLAlchemy's
// own behaviour and is kept: every checkout at the limit fails with ValueError (front ends
// that take timeouts from users refuse it before it gets here).
std::optional<std::string> validate(const PoolConfig& config);

// max_overflow as QueuePool applies it: 2.0 forces -1 (unlimited) when pool_size is 0.
int effective_max_overflow(const PoolConfig& config);

// The text of SQLAlchemy's TimeoutError, with the overflow read at raise time:
// "QueuePool limit of size 1 overflow 1 reached, connection timed out, timeout 0.05".
std::string timeout_message(const PoolConfig& config, std::int64_t overflow_at_raise);

// "0.05s", "30s", "250ms": a duration the way users write it in scenario files.
std::string format_duration(Duration d);

}  // namespace poolsim
