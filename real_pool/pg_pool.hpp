// PgPool: a thread-safe pool of real libpq connections driven by the same PoolCore as the
// simulator, so it behaves as SQLAlchemy's QueuePool (pool_size, max_overflow, timeout,
// recycle, pre_ping, LIFO, reset-on-return) with real sockets.
//
//   PoolConfig config;
//   config.pool_size = 4;
//   PgPool pool("host=127.0.0.1 port=5432 user=app password=... dbname=app", config);
//   {
//     PgPool::Handle handle = pool.checkout();  // throws PoolError
//     PGresult* result = PQexec(handle.conn(), "SELECT 1");
//     PQclear(result);
//   }  // the handle checks itself back in (ROLLBACK if a transaction is open)
//
// Driver rules: one mutex around the core; the steady clock is read in one place, under it.
// Every action that does I/O runs outside the lock, on the thread whose request caused it: a
// checkout connects and pings for itself (also when it was woken by a hand-off), a release
// does its own reset, and whoever's input made the core close a connection closes it.
// A waiter sleeps on its own condition variable until its deadline, then tells the core
// (WaitExpired), which answers with SQLAlchemy's TimeoutError or lets it create a connection.
//
// A PoolConfig with policy static runs SQLAlchemy's StaticPool (StaticCore): one connection,
// which checkouts take turns on, first come first served, from checkout to the end of their
// reset (libpq runs one query at a time on a connection; psycopg2 locks it for each execute).
//
// The same PgPool runs HikariCP's pool (HikariCore) and psycopg_pool's (PsycopgCore), which
// connect in the background: the pool then has threads of its own, as they do (HikariCP's one
// connection adder, psycopg_pool's num_workers workers). They open the connections, run the
// keepalive checks and the pool's timers (timeouts, lifetimes, idle retirement, ShrinkPool);
// a checkout just waits for its answer. pgbouncer's server pool (PgbouncerCore) runs the same
// way, for a C++ program that wants transaction pooling in process.
#pragma once

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pool_model/events.hpp"
#include "pool_model/hikari_core.hpp"
#include "pool_model/pgbouncer_core.hpp"
#include "pool_model/pool_config.hpp"
#include "pool_model/pool_core.hpp"
#include "pool_model/psycopg_core.hpp"

namespace poolsim::real_pool {

struct PoolError : std::runtime_error {
  enum class Kind {
    kTimeout,             // the pool stayed exhausted for pool.timeout (SQLAlchemy's message)
    kConnectFailed,       // the connect failed or timed out; the message is libpq's or ours
    kTooManyConnections,  // the server refused: "too many clients" (SQLSTATE 53300)
    kPingError,           // pre-ping failed with an error that is not a disconnect
  };
  PoolError(Kind error_kind, const std::string& message)
      : std::runtime_error(message), kind(error_kind) {}
  Kind kind;
};

namespace detail {
class PoolState;
}

class PgPool {
 public:
  // conninfo is a libpq connection string or URI. application_name is "poolsim" unless
  // conninfo sets it. A connect that has not finished after connect_timeout fails with
  // kConnectFailed (nullopt: wait as long as the network does); a connect_timeout in conninfo
  // (whole seconds, 0 = none) takes precedence, as it would for libpq. The deadline is kept
  // on the pool's clock to the millisecond. The same deadline bounds the pool's own round trips,
  // pre-ping and reset-on-return: a ping without an answer by then is a disconnect (reconnect),
  // a reset a failed one (the connection is closed). Throws std::invalid_argument for a config
  // PoolCore refuses. Connects lazily, like QueuePool.
  PgPool(std::string conninfo, PoolConfig config,
         std::optional<Duration> connect_timeout = std::chrono::seconds(10));
  // HikariCP's pool and psycopg_pool's: their threads start filling the pool at once.
  PgPool(std::string conninfo, HikariConfig config,
         std::optional<Duration> connect_timeout = std::chrono::seconds(10));
  PgPool(std::string conninfo, PsycopgConfig config,
         std::optional<Duration> connect_timeout = std::chrono::seconds(10));
  // pgbouncer's server pool in transaction pooling, in process: a checkout is a transaction
  // that needs a server (no reset on return: end the transaction before releasing; invalidate()
  // closes the server as a broken one). Servers are logged in one at a time, idle ones reused
  // last in, first out, and the janitor's timed work runs on the pool's timer thread.
  PgPool(std::string conninfo, PgbouncerConfig config,
         std::optional<Duration> connect_timeout = std::chrono::seconds(10));
  // Stops the pool's threads (a connect in progress first finishes or times out) and closes
  // every idle connection. Handles still out stay usable and close their connection when
  // released. No checkout may be in flight (that is a use-after-free).
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  class Handle {
   public:
    Handle() = default;
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle&& other) noexcept;  // releases what it held first
    ~Handle() { release(); }

    PGconn* conn() const { return conn_; }
    // Check in: reset-on-return (ROLLBACK / COMMIT if a transaction is open, or nothing). A
    // connection libpq reports broken (PQstatus CONNECTION_BAD: the server or the network
    // dropped it under a query) is given back as disconnected() instead.
    void release();
    // Hard invalidate: the connection is closed without a reset; its slot reconnects later.
    void invalidate();
    // What SQLAlchemy's Engine does on a disconnect error: every connection older than now is
    // recycled at its next checkout, and this one is invalidated.
    void disconnected();
    explicit operator bool() const { return conn_ != nullptr; }

   private:
    friend class PgPool;
    Handle(std::shared_ptr<detail::PoolState> state, SlotId slot, ConnId conn_id, PGconn* conn)
        : state_(std::move(state)), slot_(slot), conn_id_(conn_id), conn_(conn) {}

    std::shared_ptr<detail::PoolState> state_;
    SlotId slot_{};
    ConnId conn_id_{};
    PGconn* conn_ = nullptr;
  };

  // Blocks until a connection is granted; throws PoolError.
  Handle checkout();
  // QueuePool's (or StaticPool's) status(); std::logic_error for the other pools.
  PoolStatus status() const;
  std::size_t in_use() const;  // connections handed out and not yet given back

  struct Counters {
    std::uint64_t opened = 0;         // successful connects
    std::uint64_t closed = 0;         // connections closed (recycle, invalidation, overflow...)
    std::uint64_t pings = 0;          // pre-ping round trips
    std::uint64_t ping_failures = 0;  // of which failed (disconnect or error)
    std::uint64_t resets = 0;         // ROLLBACK / COMMIT sent (skipped when no transaction)
  };
  Counters counters() const;
  std::size_t open_connections() const;  // connections the pool holds (idle + out)
  // QueuePool's (or StaticPool's) settings; std::logic_error for the other pools.
  const PoolConfig& config() const;

 private:
  void start_threads(int count);

  std::shared_ptr<detail::PoolState> state_;
  std::vector<std::thread> threads_;  // the pool's own (HikariCP, psycopg_pool)
};

}  // namespace poolsim::real_pool
