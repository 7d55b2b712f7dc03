// A throw-away PostgreSQL server for tests, benchmarks and `poolsim --dsn auto`.
//
// The constructor initdb's a cluster into a fresh directory under /tmp (owned by `postgres`
// when run as root: the server refuses to run as root), listens on 127.0.0.1 only, on a free
// port, with its unix socket inside that directory, and starts it with `pg_ctl -w`. Host
// connections authenticate with scram-sha-256 and a random password for user postgres.
// Durability is off (fsync, full_page_writes, synchronous_commit) to keep start-up fast.
// The destructor stops the server and deletes the directory, also when construction failed
// half-way.
//
//   poolsim::real_pool::TestServer server;
//   PGconn* conn = PQconnectdb(server.dsn().c_str());
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace poolsim::real_pool {

class TestServer {
 public:
  // Throws std::runtime_error (with the tail of the tool's or the server's log) on failure.
  TestServer();
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  // From the first call on, SIGINT, SIGTERM and SIGHUP stop and delete every TestServer of the
  // process, then end it with status 128 + the signal (a server started for `--dsn auto` must
  // not outlive a Ctrl-C). A handler only writes to a pipe; a thread does the cleanup. For
  // programs that own their signals; the Python package leaves them to Python.
  static void clean_up_on_signals();

  // "host=127.0.0.1 port=N user=postgres password=... dbname=postgres"
  std::string dsn() const;
  int port() const { return port_; }
  const std::filesystem::path& directory() const { return dir_; }

  void start();    // pg_ctl start -w (same port, same data)
  void stop();     // pg_ctl stop -m fast -w; every connection is dropped
  void restart();  // stop() then start()
  bool running() const { return running_; }

  // ALTER SYSTEM SET name = 'value', then pg_reload_conf(). Parameters that only take effect
  // at server start (context "postmaster" in pg_settings: max_connections, shared_buffers...)
  // restart the server instead, which drops every connection. A reload is asynchronous:
  // backends pick the new value up at their next command, new connections within milliseconds.
  void set_parameter(const std::string& name, const std::string& value);

  // pg_terminate_backend() of every backend with this application_name (waiting up to 5 s for
  // each to exit); returns how many were terminated.
  int terminate_backends(const std::string& application_name);
  // Backends with this application_name in pg_stat_activity. A connection closed by its client
  // leaves pg_stat_activity a moment later: poll (see wait_for_connections).
  int connections(const std::string& application_name) const;
  // Polls connections() until it equals expected or the time runs out; returns the last count.
  int wait_for_connections(const std::string& application_name, int expected,
                           double timeout_seconds = 5.0) const;

 private:
  void cleanup() noexcept;
  void run_tool(const std::vector<std::string>& argv) const;
  std::string log_tail(const std::filesystem::path& log) const;

  std::filesystem::path dir_;
  std::filesystem::path data_;
  std::string password_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace poolsim::real_pool
