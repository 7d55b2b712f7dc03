#include "real_pool/test_server.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace poolsim::real_pool {
namespace {

namespace fs = std::filesystem;

const char* const kBinDir = "/usr/lib/postgresql/15/bin";
const char* const kServerUser = "postgres";
const char* const kAdminApplication = "poolsim_test_server_admin";

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("TestServer: " + what); }

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), "TestServer: " + what);
}

std::string random_password() {
  std::random_device device;
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) out += kHex[device() % 16];
  return out;
}

// A free localhost port: bind port 0 and read back what the kernel chose.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail_errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    fail_errno("bind to a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

ConnPtr admin_connect(const std::string& dsn) {
  const std::string conninfo =
      dsn + " application_name=" + kAdminApplication + " connect_timeout=10";
  ConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    fail("admin connection failed: " + std::string(conn ? PQerrorMessage(conn.get()) : "oom"));
  }
  return conn;
}

ResultPtr exec(PGconn* conn, const std::string& sql, const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  ResultPtr result(PQexecParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                values.data(), nullptr, nullptr, 0));
  const ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    fail("query failed: " + sql + ": " + PQerrorMessage(conn));
  }
  return result;
}

int first_int(const ResultPtr& result) { return std::atoi(PQgetvalue(result.get(), 0, 0)); }

}  // namespace

TestServer::TestServer() {
  try {
    std::string pattern = (fs::temp_directory_path() / "poolsim-pg-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) fail_errno("mkdtemp");
    dir_ = pattern;
    data_ = dir_ / "data";
    password_ = random_password();
    port_ = free_port();

    const fs::path pwfile = dir_ / "pwfile";
    std::ofstream(pwfile) << password_ << "\n";
    if (::geteuid() == 0) {
      const passwd* user = ::getpwnam(kServerUser);
      if (user == nullptr) fail(std::string("no user ") + kServerUser + " to run the server as");
      for (const fs::path& p : {dir_, pwfile}) {
        if (::chown(p.c_str(), user->pw_uid, user->pw_gid) != 0) fail_errno("chown " + p.string());
      }
    }

    run_tool({std::string(kBinDir) + "/initdb", "-D", data_.string(), "-U", "postgres",
              "--pwfile=" + pwfile.string(), "--auth-local=trust", "--auth-host=scram-sha-256",
              "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"});
    fs::remove(pwfile);

    std::ofstream conf(data_ / "postgresql.conf", std::ios::app);
    conf << "\n# poolsim TestServer\n"
         << "listen_addresses = '127.0.0.1'\n"
         << "port = " << port_ << "\n"
         << "unix_socket_directories = '" << dir_.string() << "'\n"
         << "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
         << "shared_buffers = 16MB\nmax_connections = 100\nlogging_collector = off\n";
    conf.close();
    if (!conf) fail("could not write postgresql.conf");

    start();
  } catch (...) {
    cleanup();
    throw;
  }
}

TestServer::~TestServer() { cleanup(); }

void TestServer::cleanup() noexcept {
  if (running_) {
    try {
      run_tool({std::string(kBinDir) + "/pg_ctl", "-D", data_.string(), "-m", "immediate", "-w",
                "stop"});
    } catch (...) {  // nothing more to do: the directory goes anyway
    }
    running_ = false;
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
    dir_.clear();
  }
}

std::string TestServer::dsn() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres password=" + password_ +
         " dbname=postgres";
}

void TestServer::start() {
  if (running_) return;
  run_tool({std::string(kBinDir) + "/pg_ctl", "-D", data_.string(), "-l",
            (dir_ / "server.log").string(), "-w", "-t", "60", "start"});
  running_ = true;
}

void TestServer::stop() {
  if (!running_) return;
  run_tool({std::string(kBinDir) + "/pg_ctl", "-D", data_.string(), "-m", "fast", "-w", "stop"});
  running_ = false;
}

void TestServer::restart() {
  stop();
  start();
}

void TestServer::set_parameter(const std::string& name, const std::string& value) {
  std::string context;
  {
    ConnPtr conn = admin_connect(dsn());
    std::unique_ptr<char, decltype(&PQfreemem)> ident(
        PQescapeIdentifier(conn.get(), name.c_str(), name.size()), &PQfreemem);
    std::unique_ptr<char, decltype(&PQfreemem)> literal(
        PQescapeLiteral(conn.get(), value.c_str(), value.size()), &PQfreemem);
    if (!ident || !literal) fail("could not quote " + name + " = " + value);
    exec(conn.get(), "ALTER SYSTEM SET " + std::string(ident.get()) + " = " + literal.get());
    ResultPtr row = exec(conn.get(), "SELECT context FROM pg_settings WHERE name = $1", {name});
    if (PQntuples(row.get()) == 1) context = PQgetvalue(row.get(), 0, 0);
    if (context != "postmaster") exec(conn.get(), "SELECT pg_reload_conf()");
  }
  if (context == "postmaster") restart();
}

int TestServer::terminate_backends(const std::string& application_name) {
  ConnPtr conn = admin_connect(dsn());
  return first_int(exec(conn.get(),
                        "SELECT count(*) FILTER (WHERE t) FROM (SELECT pg_terminate_backend(pid, "
                        "5000) AS t FROM pg_stat_activity WHERE application_name = $1 AND pid <> "
                        "pg_backend_pid()) s",
                        {application_name}));
}

int TestServer::connections(const std::string& application_name) const {
  ConnPtr conn = admin_connect(dsn());
  return first_int(exec(conn.get(),
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                        "pid <> pg_backend_pid()",
                        {application_name}));
}

int TestServer::wait_for_connections(const std::string& application_name, int expected,
                                     double timeout_seconds) const {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  for (;;) {
    const int count = connections(application_name);
    if (count == expected || std::chrono::steady_clock::now() >= deadline) return count;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Runs a PostgreSQL tool (as `postgres` when we are root) with its output in tools.log.
void TestServer::run_tool(const std::vector<std::string>& argv) const {
  std::vector<std::string> full;
  if (::geteuid() == 0) full = {"runuser", "-u", kServerUser, "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  const fs::path log = dir_ / "tools.log";
  const pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    // The tools want a working directory the postgres user can read.
    if (::chdir(dir_.c_str()) != 0) ::_exit(126);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail_errno("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string message =
        argv[0] + " failed (status " + std::to_string(status) + ")\n" + log_tail(log);
    if (argv[0].ends_with("pg_ctl")) message += "\nserver log:\n" + log_tail(dir_ / "server.log");
    fail(message);
  }
}

std::string TestServer::log_tail(const fs::path& log) const {
  std::ifstream in(log);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  constexpr std::size_t kTail = 2000;
  return text.size() > kTail ? text.substr(text.size() - kTail) : text;
}

}  // namespace poolsim::real_pool
