// PgPool against a real PostgreSQL: one TestServer for the suite, faults made for real
// (pg_terminate_backend, max_connections, a port nobody listens on).
//
// The core's behaviour scripts (tests/pool_model/pool_core_cases.txt) that a real server can
// play, each re-enacted here with real connections, threads and time:
//   reuse, and a second checkout creating another ..... CheckoutQueryRelease
//   waiting, and failing after pool.timeout ........... TimeoutHasSqlalchemysMessage
//   the longest waiter served first ................... WaitersAreServedInTheOrderTheyCame
//   a failed creation ................................. ConnectFailureIsReported, TooManyClients
//   pre-ping reconnect, older ones recycled ........... PrePingReconnectsAndInvalidatesThePool
//   recycle ........................................... RecycleReplacesOldConnections
//   pool.timeout 0, max_overflow -1 ................... ZeroTimeoutFailsAtOnceAndUnlimitedOverflowNeverWaits
//   overflow closed on return to a full queue ......... PoolSizeAndOverflowCapTheConnections
//   a failing reset ................................... AFailingResetClosesTheConnection
//   hard invalidation ................................. InvalidateClosesTheConnection
//   LIFO .............................................. UseLifoReusesTheLastReturnedConnection
//   an Engine disconnect invalidates the pool ......... WithoutPrePingADisconnectIsReportedAndInvalidates,
//                                                       ABrokenConnectionGivenBackIsADisconnect
// The rest (SQLAlchemy 1.4/2.0 pool_size 0 limits, dispose, detach, a negative timeout, a
// connect slower than recycle, driver mistakes) are the core's alone, with no server-side
// behaviour to check: the core test and the conformance replay cover them.
//
// HikariCore and PsycopgCore on the same PgPool, with its own threads (Hikari... and
// Psycopg... tests): filling in the background before anyone asks, a returned connection
// handed to a waiter, each library's timeout and its message, growth one connect at a time,
// ShrinkPool, many threads at once, and a destructor that stops the threads and closes all.
#include "real_pool/pg_pool.hpp"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "real_pool/fault_proxy.hpp"
#include "real_pool/test_server.hpp"

namespace poolsim::real_pool {
namespace {

using std::chrono::milliseconds;

const std::string kApp = "poolsim_test";

// Runs sql on the handle's connection; true when it succeeded.
bool run(const PgPool::Handle& handle, const char* sql) {
  PGresult* result = PQexec(handle.conn(), sql);
  const ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  PQclear(result);
  return status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
}

int backend_pid(const PgPool::Handle& handle) { return PQbackendPID(handle.conn()); }

// `threads` threads check out `checkouts` times each, one checkout in ten running SELECT 1.
struct Hammered {
  int granted = 0;  // checkouts answered with a connection
  int failed = 0;   // a PoolError, or a statement that failed
};
Hammered hammer(PgPool& pool, int threads, int checkouts) {
  std::atomic<int> granted = 0;
  std::atomic<int> failed = 0;
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    running.emplace_back([&, t] {
      for (int i = 0; i < checkouts; ++i) {
        try {
          PgPool::Handle handle = pool.checkout();
          if (i % 10 == t % 10 && !run(handle, "SELECT 1")) ++failed;
          ++granted;
        } catch (const PoolError&) {
          ++failed;
        }
      }
    });
  }
  for (auto& thread : running) thread.join();
  return Hammered{granted, failed};
}

PoolConfig config_of(int pool_size, int max_overflow) {
  PoolConfig config;
  config.pool_size = pool_size;
  config.max_overflow = max_overflow;
  config.timeout = std::chrono::seconds(10);
  return config;
}

class PgPoolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void TearDown() override {
    // Every pool of the test is gone: none of its connections may be left on the server.
    EXPECT_EQ(server_->wait_for_connections(kApp, 0), 0) << "leftover pool connections";
  }

  static std::string dsn() { return server_->dsn() + " application_name=" + kApp; }
  // dsn() with the server's port replaced by another (a fault proxy's).
  static std::string dsn_via(int port) {
    std::string conninfo = dsn();
    const std::string from = "port=" + std::to_string(server_->port());
    return conninfo.replace(conninfo.find(from), from.size(), "port=" + std::to_string(port));
  }
  static int connections() { return server_->connections(kApp); }
  void disconnect_invalidates_the_pool(bool report);
  static int wait_for_connections(int expected) {
    return server_->wait_for_connections(kApp, expected);
  }

  static TestServer* server_;
};
TestServer* PgPoolTest::server_ = nullptr;

TEST_F(PgPoolTest, CheckoutQueryRelease) {
  PgPool pool(dsn(), config_of(2, 0));
  {
    PgPool::Handle handle = pool.checkout();
    ASSERT_TRUE(handle);
    PGresult* result = PQexec(handle.conn(), "SELECT 40 + 2");
    ASSERT_EQ(PQresultStatus(result), PGRES_TUPLES_OK);
    EXPECT_STREQ(PQgetvalue(result, 0, 0), "42");
    PQclear(result);
    EXPECT_EQ(pool.status().checkedout, 1);
    EXPECT_EQ(connections(), 1);
  }
  EXPECT_EQ(pool.status().checkedout, 0);
  EXPECT_EQ(pool.status().checkedin, 1);
  EXPECT_EQ(pool.open_connections(), 1u);
  // The same connection comes back; an open transaction was rolled back on return.
  PgPool::Handle first = pool.checkout();
  const int pid = backend_pid(first);
  ASSERT_TRUE(run(first, "BEGIN"));
  ASSERT_TRUE(run(first, "CREATE TEMP TABLE t (x int)"));
  first.release();
  EXPECT_FALSE(first);
  PgPool::Handle again = pool.checkout();
  EXPECT_EQ(backend_pid(again), pid);
  EXPECT_EQ(PQtransactionStatus(again.conn()), PQTRANS_IDLE);
  EXPECT_FALSE(run(again, "SELECT * FROM t"));  // rolled back: the table is gone
  again.release();
  const PgPool::Counters counters = pool.counters();
  EXPECT_EQ(counters.opened, 1u);
  EXPECT_EQ(counters.resets, 1u);  // only the release with a transaction open sent ROLLBACK
}

TEST_F(PgPoolTest, PoolSizeAndOverflowCapTheConnections) {
  PoolConfig config = config_of(2, 1);
  config.timeout = milliseconds(50);
  PgPool pool(dsn(), config);
  std::vector<PgPool::Handle> held;
  for (int i = 0; i < 3; ++i) held.push_back(pool.checkout());
  EXPECT_EQ(connections(), 3);
  EXPECT_EQ(pool.status().overflow, 1);
  EXPECT_THROW(pool.checkout(), PoolError);
  EXPECT_EQ(connections(), 3);
  // The overflow connection is closed when it comes back to a full queue.
  held.clear();
  EXPECT_EQ(wait_for_connections(2), 2);
  EXPECT_EQ(pool.open_connections(), 2u);
  EXPECT_EQ(pool.status().overflow, 0);
  EXPECT_EQ(pool.counters().closed, 1u);
}

TEST_F(PgPoolTest, TimeoutHasSqlalchemysMessage) {
  PoolConfig config = config_of(1, 1);
  config.timeout = milliseconds(100);
  PgPool pool(dsn(), config);
  PgPool::Handle a = pool.checkout();
  PgPool::Handle b = pool.checkout();
  std::string message;
  std::optional<PoolError::Kind> kind;
  const auto start = std::chrono::steady_clock::now();
  std::thread waiter([&] {
    try {
      pool.checkout();
    } catch (const PoolError& e) {
      message = e.what();
      kind = e.kind;
    }
  });
  waiter.join();
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(100));
  ASSERT_TRUE(kind);
  EXPECT_EQ(*kind, PoolError::Kind::kTimeout);
  EXPECT_EQ(message,
            "QueuePool limit of size 1 overflow 1 reached, connection timed out, timeout 0.10");

  // A waiter gets the connection released before its deadline (a hand-off between threads).
  PgPool pool2(dsn(), config_of(1, 0));
  PgPool::Handle only = pool2.checkout();
  const int pid = backend_pid(only);
  int got = 0;
  std::thread second([&] { got = backend_pid(pool2.checkout()); });
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(pool2.status().waiting, 1);
  only.release();
  second.join();
  EXPECT_EQ(got, pid);
}

// pool_core_cases.txt: "the longest waiter gets the returned connection after its reset".
TEST_F(PgPoolTest, WaitersAreServedInTheOrderTheyCame) {
  PgPool pool(dsn(), config_of(1, 0));
  PgPool::Handle only = pool.checkout();
  std::mutex mutex;
  std::vector<int> served;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      PgPool::Handle handle = pool.checkout();
      std::lock_guard<std::mutex> lock(mutex);
      served.push_back(i);
    });
    // The next one starts waiting only after this one is in the queue.
    for (int spin = 0; spin < 500 && pool.status().waiting != i + 1; ++spin) {
      std::this_thread::sleep_for(milliseconds(2));
    }
    ASSERT_EQ(pool.status().waiting, i + 1);
  }
  only.release();
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(served, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(pool.counters().opened, 1u);
}

// pool_core_cases.txt: "LIFO reuses the most recently returned connection"; FIFO the oldest.
TEST_F(PgPoolTest, UseLifoReusesTheLastReturnedConnection) {
  for (const QueueOrder order : {QueueOrder::kFifo, QueueOrder::kLifo}) {
    PoolConfig config = config_of(2, 0);
    config.order = order;
    PgPool pool(dsn(), config);
    PgPool::Handle a = pool.checkout();
    PgPool::Handle b = pool.checkout();
    const int first_back = backend_pid(a);
    const int last_back = backend_pid(b);
    a.release();
    b.release();
    PgPool::Handle next = pool.checkout();
    EXPECT_EQ(backend_pid(next), order == QueueOrder::kLifo ? last_back : first_back);
  }
}

// pool_core_cases.txt: "pool.timeout 0 fails at once when the pool is at its limit" and
// "max_overflow -1 never waits; a connection returned into a full queue is closed".
TEST_F(PgPoolTest, ZeroTimeoutFailsAtOnceAndUnlimitedOverflowNeverWaits) {
  {
    PoolConfig config = config_of(1, 0);
    config.timeout = std::chrono::seconds(0);
    PgPool pool(dsn(), config);
    PgPool::Handle held = pool.checkout();
    try {
      pool.checkout();
      ADD_FAILURE() << "a checkout at the limit with timeout 0 was granted";
    } catch (const PoolError& e) {
      EXPECT_EQ(e.kind, PoolError::Kind::kTimeout);
    }
  }
  ASSERT_EQ(wait_for_connections(0), 0);

  PgPool unlimited(dsn(), config_of(1, -1));
  std::vector<PgPool::Handle> many;
  for (int i = 0; i < 4; ++i) many.push_back(unlimited.checkout());
  EXPECT_EQ(connections(), 4);
  many.clear();
  EXPECT_EQ(wait_for_connections(1), 1);  // only pool_size stay open
  EXPECT_EQ(unlimited.counters().closed, 3u);
}

TEST_F(PgPoolTest, RecycleReplacesOldConnections) {
  PoolConfig config = config_of(1, 0);
  config.recycle = milliseconds(200);
  PgPool pool(dsn(), config);
  int first = 0;
  {
    PgPool::Handle handle = pool.checkout();
    first = backend_pid(handle);
  }
  {
    PgPool::Handle handle = pool.checkout();  // young enough: the same one
    EXPECT_EQ(backend_pid(handle), first);
  }
  std::this_thread::sleep_for(milliseconds(250));
  PgPool::Handle handle = pool.checkout();
  EXPECT_NE(backend_pid(handle), first);
  EXPECT_TRUE(run(handle, "SELECT 1"));
  EXPECT_EQ(wait_for_connections(1), 1);
  EXPECT_EQ(pool.counters().opened, 2u);
  EXPECT_EQ(pool.counters().closed, 1u);
}

TEST_F(PgPoolTest, PrePingReconnectsAndInvalidatesThePool) {
  PoolConfig config = config_of(3, 0);
  config.pre_ping = true;
  PgPool pool(dsn(), config);
  std::set<int> old_pids;
  {
    std::vector<PgPool::Handle> held;
    for (int i = 0; i < 3; ++i) held.push_back(pool.checkout());
    for (const auto& h : held) old_pids.insert(backend_pid(h));
  }
  EXPECT_EQ(server_->terminate_backends(kApp), 3);
  EXPECT_EQ(pool.counters().pings, 0u);  // fresh connections are never pinged
  {
    PgPool::Handle handle = pool.checkout();  // ping fails, reconnects, succeeds
    EXPECT_EQ(old_pids.count(backend_pid(handle)), 0u);
    EXPECT_TRUE(run(handle, "SELECT 1"));
  }
  EXPECT_EQ(pool.counters().pings, 1u);
  EXPECT_EQ(pool.counters().ping_failures, 1u);
  {
    // The two other old connections are recycled without a ping (the pool-wide
    // invalidation); the reconnected one is pinged and fine.
    std::vector<PgPool::Handle> held;
    for (int i = 0; i < 3; ++i) held.push_back(pool.checkout());
    for (const auto& h : held) {
      EXPECT_EQ(old_pids.count(backend_pid(h)), 0u);
      EXPECT_TRUE(run(h, "SELECT 1"));
    }
  }
  EXPECT_EQ(pool.counters().pings, 2u);
  EXPECT_EQ(pool.counters().ping_failures, 1u);
  EXPECT_EQ(pool.counters().opened, 6u);
  EXPECT_EQ(connections(), 3);
}

// A query fails on a terminated backend, then the caller reports it (disconnected()) or just
// gives the handle back (release(): libpq says the connection is bad, and the pool does what
// SQLAlchemy's Engine does on a disconnect error either way).
void PgPoolTest::disconnect_invalidates_the_pool(bool report) {
  PgPool pool(dsn(), config_of(2, 0));
  int old_idle = 0;
  {
    PgPool::Handle a = pool.checkout();
    PgPool::Handle b = pool.checkout();
    old_idle = backend_pid(b);
  }
  EXPECT_EQ(server_->terminate_backends(kApp), 2);
  PgPool::Handle handle = pool.checkout();
  const int dead = backend_pid(handle);
  EXPECT_FALSE(run(handle, "SELECT 1"));
  EXPECT_EQ(PQstatus(handle.conn()), CONNECTION_BAD);
  if (report) {
    handle.disconnected();
  } else {
    handle.release();
  }
  EXPECT_FALSE(handle);
  EXPECT_EQ(pool.open_connections(), 1u);
  EXPECT_EQ(pool.counters().resets, 0u);  // no ROLLBACK sent down a dead connection
  // The other old connection is recycled at its checkout, the empty record reconnects.
  PgPool::Handle x = pool.checkout();
  PgPool::Handle y = pool.checkout();
  for (const PgPool::Handle* h : {&x, &y}) {
    EXPECT_NE(backend_pid(*h), dead);
    EXPECT_NE(backend_pid(*h), old_idle);
    EXPECT_TRUE(run(*h, "SELECT 1"));
  }
  EXPECT_EQ(pool.counters().opened, 4u);
}

TEST_F(PgPoolTest, WithoutPrePingADisconnectIsReportedAndInvalidates) {
  disconnect_invalidates_the_pool(true);
}

TEST_F(PgPoolTest, ABrokenConnectionGivenBackIsADisconnect) {
  disconnect_invalidates_the_pool(false);
}

TEST_F(PgPoolTest, InvalidateClosesTheConnection) {
  PgPool pool(dsn(), config_of(1, 0));
  PgPool::Handle handle = pool.checkout();
  const int pid = backend_pid(handle);
  handle.invalidate();
  EXPECT_FALSE(handle);
  EXPECT_EQ(pool.open_connections(), 0u);
  EXPECT_EQ(wait_for_connections(0), 0);
  EXPECT_EQ(pool.status().checkedin, 1);  // the empty record is queued
  PgPool::Handle next = pool.checkout();
  EXPECT_NE(backend_pid(next), pid);
}

// pool_core_cases.txt: "a failing reset invalidates the connection; the empty slot is still
// checked in". The backend dies inside a transaction; libpq does not know until the ROLLBACK.
TEST_F(PgPoolTest, AFailingResetClosesTheConnection) {
  PgPool pool(dsn(), config_of(1, 0));
  PgPool::Handle handle = pool.checkout();
  const int pid = backend_pid(handle);
  ASSERT_TRUE(run(handle, "BEGIN"));
  EXPECT_EQ(server_->terminate_backends(kApp), 1);
  EXPECT_EQ(PQstatus(handle.conn()), CONNECTION_OK);  // not noticed yet
  handle.release();
  EXPECT_EQ(pool.counters().resets, 1u);
  EXPECT_EQ(pool.open_connections(), 0u);
  EXPECT_EQ(pool.status().checkedin, 1);  // the empty record is queued
  PgPool::Handle next = pool.checkout();
  EXPECT_NE(backend_pid(next), pid);
  EXPECT_TRUE(run(next, "SELECT 1"));
}

int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST_F(PgPoolTest, ConnectFailureIsReported) {
  PgPool pool("host=127.0.0.1 port=" + std::to_string(unused_port()) +
                  " user=postgres dbname=postgres connect_timeout=2",
              config_of(1, 0));
  try {
    pool.checkout();
    FAIL() << "checkout succeeded";
  } catch (const PoolError& e) {
    EXPECT_EQ(e.kind, PoolError::Kind::kConnectFailed);
    EXPECT_NE(std::string(e.what()).find("refused"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.open_connections(), 0u);
  EXPECT_EQ(pool.status().overflow, -1);  // the failed creation gave its place back
}

TEST_F(PgPoolTest, ConnectTimeoutIsKeptOnThePoolsClock) {
  // The proxy accepts the TCP connection but holds back the upstream connect while the
  // blackhole is on: without a timer of its own the pool would wait for the blackhole to end.
  FaultProxy proxy("127.0.0.1", server_->port());
  proxy.set_blackhole(true);
  PgPool pool(dsn_via(proxy.port()), config_of(1, 0), milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  try {
    pool.checkout();
    FAIL() << "checkout succeeded through a black hole";
  } catch (const PoolError& e) {
    EXPECT_EQ(e.kind, PoolError::Kind::kConnectFailed);
    EXPECT_NE(std::string(e.what()).find("timed out after 300ms"), std::string::npos) << e.what();
  }
  // Not a speed check: the pool must not give up before its deadline.
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
  EXPECT_EQ(pool.open_connections(), 0u);
  EXPECT_EQ(pool.status().overflow, -1);  // the failed creation gave its place back
  proxy.set_blackhole(false);
  PgPool::Handle handle = pool.checkout();  // the network is back: the same pool recovers
  EXPECT_TRUE(run(handle, "SELECT 1"));
}

TEST_F(PgPoolTest, ConnectTimeoutInTheConninfoTakesPrecedence) {
  FaultProxy proxy("127.0.0.1", server_->port());
  proxy.set_blackhole(true);
  PgPool pool(dsn_via(proxy.port()) + " connect_timeout=1", config_of(1, 0),
              std::nullopt);  // without the conninfo's 1 s this would hang
  EXPECT_THROW(pool.checkout(), PoolError);
}

TEST_F(PgPoolTest, TooManyClients) {
  server_->set_parameter("max_connections", "4");  // restarts the server
  {
    PgPool pool(dsn(), config_of(10, 0));
    std::vector<PgPool::Handle> held;
    std::optional<PoolError> error;
    for (int i = 0; i < 10 && !error; ++i) {
      try {
        held.push_back(pool.checkout());
      } catch (const PoolError& e) {
        error = e;
      }
    }
    ASSERT_TRUE(error);
    EXPECT_EQ(error->kind, PoolError::Kind::kTooManyConnections) << error->what();
    EXPECT_EQ(held.size(), 4u);
    EXPECT_EQ(pool.open_connections(), 4u);
  }
  server_->set_parameter("max_connections", "100");
}

TEST_F(PgPoolTest, ConcurrentCheckoutsAreAllAnswered) {
  constexpr int kThreads = 8;
  constexpr int kCheckouts = 200;
  PgPool pool(dsn(), config_of(4, 0));
  const Hammered result = hammer(pool, kThreads, kCheckouts);
  EXPECT_EQ(result.granted, kThreads * kCheckouts);
  EXPECT_EQ(result.failed, 0);
  const PoolStatus status = pool.status();
  EXPECT_EQ(status.checkedout, 0);
  EXPECT_EQ(status.waiting, 0);
  EXPECT_EQ(status.checkedin, 4);
  EXPECT_EQ(pool.open_connections(), 4u);
  EXPECT_EQ(pool.counters().opened, 4u);
  EXPECT_EQ(connections(), 4);
}

// Hand-offs that make the woken thread reconnect (recycle) or ping, with overflow and waiters.
TEST_F(PgPoolTest, ConcurrentCheckoutsWithRecycleAndPrePing) {
  constexpr int kThreads = 8;
  constexpr int kCheckouts = 60;
  PoolConfig config = config_of(2, 2);
  config.recycle = milliseconds(5);
  config.pre_ping = true;
  PgPool pool(dsn(), config);
  std::atomic<int> granted = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCheckouts; ++i) {
        PgPool::Handle handle = pool.checkout();
        if (run(handle, "SELECT 1")) ++granted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(granted, kThreads * kCheckouts);
  EXPECT_EQ(pool.status().checkedout, 0);
  EXPECT_EQ(pool.status().waiting, 0);
  EXPECT_EQ(pool.open_connections(), 2u);
  const PgPool::Counters counters = pool.counters();
  EXPECT_EQ(counters.opened - counters.closed, 2u);
  EXPECT_EQ(wait_for_connections(2), 2);
}

TEST_F(PgPoolTest, ServerRestartAndReload) {
  PgPool pool(dsn(), config_of(1, 0));
  pool.checkout().release();
  server_->restart();  // the pooled connection is now dead
  {
    PgPool::Handle handle = pool.checkout();
    EXPECT_FALSE(run(handle, "SELECT 1"));
    handle.disconnected();
  }
  {
    PgPool::Handle handle = pool.checkout();
    EXPECT_TRUE(run(handle, "SELECT 1"));
  }
  server_->set_parameter("idle_session_timeout", "200ms");  // a reload, no restart
  server_->set_parameter("idle_session_timeout", "0");
  PgPool::Handle handle = pool.checkout();
  EXPECT_TRUE(run(handle, "SELECT 1"));
}

// A checkout of a full pool must end in a timeout with the library's own message.
void expect_timeout(PgPool& pool, const char* message) {
  try {
    pool.checkout();
    ADD_FAILURE() << "a checkout of a full pool was granted; expected: " << message;
  } catch (const PoolError& e) {
    EXPECT_EQ(e.kind, PoolError::Kind::kTimeout);
    EXPECT_STREQ(e.what(), message);
  }
}

HikariConfig hikari_of(int maximum_pool_size, int minimum_idle) {
  HikariConfig config;
  config.maximum_pool_size = maximum_pool_size;
  config.minimum_idle = minimum_idle;
  config.connection_timeout = std::chrono::seconds(10);
  return config;
}

PsycopgConfig psycopg_of(int min_size, int max_size) {
  PsycopgConfig config;
  config.min_size = min_size;
  config.max_size = max_size;
  config.timeout = std::chrono::seconds(10);
  return config;
}

// HikariCP fills to minimumIdle before anyone asks (the adder thread), and a checkout finds
// a connection that is already there.
TEST_F(PgPoolTest, HikariFillsToMinimumIdleInTheBackground) {
  {
    PgPool pool(dsn(), hikari_of(4, 2));
    EXPECT_EQ(wait_for_connections(2), 2);
    EXPECT_EQ(pool.open_connections(), 2u);
    EXPECT_EQ(pool.in_use(), 0u);
    PgPool::Handle handle = pool.checkout();
    EXPECT_TRUE(run(handle, "SELECT 1"));
    EXPECT_EQ(pool.in_use(), 1u);
    EXPECT_THROW(pool.status(), std::logic_error);  // QueuePool's only
  }  // the destructor stops the adder and closes both (TearDown checks the server)
}

// connectionTimeout ends a wait with HikariCP's message, and a returned connection goes to the
// thread that waits for it.
TEST_F(PgPoolTest, HikariTimeoutAndHandOff) {
  HikariConfig config = hikari_of(1, 1);
  config.connection_timeout = milliseconds(300);
  PgPool pool(dsn(), config);
  PgPool::Handle only = pool.checkout();
  const int pid = backend_pid(only);
  const auto start = std::chrono::steady_clock::now();
  expect_timeout(pool, "Connection is not available, request timed out after 300ms.");
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
  int got = 0;
  std::thread second([&] { got = backend_pid(pool.checkout()); });
  std::this_thread::sleep_for(milliseconds(50));
  only.release();
  second.join();
  EXPECT_EQ(got, pid);
  EXPECT_EQ(pool.counters().opened, 1u);
}

// psycopg_pool opens min_size at once, grows only while a client waits, and ShrinkPool closes
// one connection beyond min_size per max_idle once the idle deque never emptied for a period.
TEST_F(PgPoolTest, PsycopgGrowsWhileClientsWaitAndShrinksPerMaxIdle) {
  PsycopgConfig config = psycopg_of(1, 3);
  config.max_idle = std::chrono::seconds(1);
  PgPool pool(dsn(), config);
  EXPECT_EQ(wait_for_connections(1), 1);
  {
    PgPool::Handle a = pool.checkout();
    PgPool::Handle b = pool.checkout();  // waits while a worker connects for it
    PgPool::Handle c = pool.checkout();
    EXPECT_EQ(pool.in_use(), 3u);
    EXPECT_EQ(connections(), 3);
    EXPECT_NE(backend_pid(a), backend_pid(b));
    EXPECT_NE(backend_pid(b), backend_pid(c));
  }
  EXPECT_EQ(pool.counters().opened, 3u);
  // ShrinkPool runs every second; the first run after the checkouts sees a deque that emptied,
  // each later one closes one: 3 -> 1 within about 3 s.
  EXPECT_EQ(server_->wait_for_connections(kApp, 1, 6.0), 1);
  EXPECT_EQ(pool.counters().closed, 2u);
}

TEST_F(PgPoolTest, PsycopgTimeoutHasItsMessage) {
  PsycopgConfig config = psycopg_of(1, 1);
  config.timeout = milliseconds(200);
  PgPool pool(dsn(), config);
  PgPool::Handle only = pool.checkout();
  expect_timeout(pool, "couldn't get a connection after 0.20 sec");
}

// Many threads on HikariCP's and psycopg_pool's pools: every checkout answered, and at the end
// nothing lent and no more connections than the pool's size.
TEST_F(PgPoolTest, BackgroundPoolsAnswerConcurrentCheckouts) {
  constexpr int kThreads = 8;
  constexpr int kCheckouts = 100;
  for (int design = 0; design < 2; ++design) {
    std::unique_ptr<PgPool> pool = design == 0
                                       ? std::make_unique<PgPool>(dsn(), hikari_of(4, 4))
                                       : std::make_unique<PgPool>(dsn(), psycopg_of(2, 4));
    const Hammered result = hammer(*pool, kThreads, kCheckouts);
    EXPECT_EQ(result.granted, kThreads * kCheckouts) << design;
    EXPECT_EQ(result.failed, 0) << design;
    EXPECT_EQ(pool->in_use(), 0u) << design;
    EXPECT_LE(pool->open_connections(), 4u) << design;
    EXPECT_LE(connections(), 4) << design;
    pool.reset();
    EXPECT_EQ(wait_for_connections(0), 0) << design;
  }
}

// StaticPool on the real pool: one connection for every checkout, which threads take turns on
// (never two holding it at once), in the order they asked.
TEST_F(PgPoolTest, StaticPoolSharesOneConnectionInTurns) {
  PoolConfig config = config_of(5, 10);
  config.policy = Policy::kStatic;
  PgPool pool(dsn(), config);
  constexpr int kThreads = 4;
  constexpr int kCheckouts = 50;
  std::atomic<int> holding = 0;
  std::atomic<int> most = 0;
  std::atomic<int> failed = 0;
  std::set<int> pids;
  std::mutex pids_mutex;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCheckouts; ++i) {
        PgPool::Handle handle = pool.checkout();
        const int now = ++holding;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        if (!run(handle, "SELECT 1")) ++failed;
        {
          std::lock_guard lock(pids_mutex);
          pids.insert(backend_pid(handle));
        }
        --holding;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(most, 1) << "two checkouts held the one connection at once";
  EXPECT_EQ(pids.size(), 1u);
  EXPECT_EQ(pool.counters().opened, 1u);
  EXPECT_EQ(connections(), 1);
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.config().policy, Policy::kStatic);

  // A waiter for the turn gets it when the holder gives the connection back.
  PgPool::Handle first = pool.checkout();
  std::atomic<bool> second_in = false;
  std::thread second([&] {
    PgPool::Handle h = pool.checkout();
    second_in = true;
  });
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(second_in) << "the second checkout did not wait for its turn";
  first.release();
  second.join();
  EXPECT_TRUE(second_in);
}

// pgbouncer's server pool in process: many threads' transactions share default_pool_size
// servers; a transaction that waits query_wait_timeout is refused at a janitor tick; an
// invalidated server is closed and a new one logged in when needed.
TEST_F(PgPoolTest, PgbouncerSharesItsServersAndRefusesAfterQueryWaitTimeout) {
  {
    PgbouncerConfig config;
    config.default_pool_size = 2;
    PgPool pool(dsn(), config);
    std::atomic<int> failed = 0;
    std::latch start(6);  // all at once, and long enough transactions that they overlap
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 30; ++i) {
          try {
            PgPool::Handle handle = pool.checkout();
            if (!run(handle, "SELECT pg_sleep(0.002)")) ++failed;
          } catch (const PoolError&) {
            ++failed;
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failed, 0);
    EXPECT_EQ(pool.counters().opened, 2u);
    EXPECT_EQ(connections(), 2);
    EXPECT_EQ(pool.in_use(), 0u);

    PgPool::Handle broken = pool.checkout();
    const int pid = backend_pid(broken);
    broken.invalidate();
    EXPECT_EQ(wait_for_connections(1), 1);
    PgPool::Handle a = pool.checkout();
    PgPool::Handle b = pool.checkout();  // logs a new server in
    EXPECT_NE(backend_pid(a), pid);
    EXPECT_NE(backend_pid(b), pid);
    EXPECT_EQ(pool.counters().opened, 3u);
  }
  PgbouncerConfig config;
  config.default_pool_size = 1;
  config.query_wait_timeout = milliseconds(500);
  PgPool pool(dsn(), config);
  PgPool::Handle only = pool.checkout();
  const auto start = std::chrono::steady_clock::now();
  expect_timeout(pool, "query_wait_timeout");
  // Refused at the first janitor tick (every 333 ms) after 500 ms of waiting.
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(500));
  EXPECT_LE(waited, milliseconds(500 + 333 + 200));
}

TEST_F(PgPoolTest, HandlesOutliveThePool) {
  PgPool::Handle kept;
  {
    PgPool pool(dsn(), config_of(2, 0));
    PgPool::Handle idle = pool.checkout();
    kept = pool.checkout();
  }  // the idle connection is closed with the pool
  EXPECT_EQ(wait_for_connections(1), 1);
  EXPECT_TRUE(run(kept, "SELECT 1"));
  kept.release();
}

}  // namespace
}  // namespace poolsim::real_pool
