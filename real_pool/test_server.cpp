#include "real_pool/test_server.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
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
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
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

// The tools running now (each the leader of its own process group), so that a signal cleanup
// can kill an initdb or pg_ctl before it deletes the directory they write in; once it has
// begun, no new tool starts.
std::mutex tools_mutex;
std::set<pid_t> running_tools;  // guarded by tools_mutex
bool cleaning_up = false;       // guarded by tools_mutex

// Runs a PostgreSQL tool (as `postgres` when we are root) in `dir`, its output appended to
// dir/tools.log; returns its wait status. Once a signal cleanup has begun only its own
// (`for_cleanup`) start.
int spawn_tool(const std::vector<std::string>& argv, const fs::path& dir,
               bool for_cleanup = false) {
  std::vector<std::string> full;
  if (::geteuid() == 0) full = {"runuser", "-u", kServerUser, "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (auto& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  const fs::path log = dir / "tools.log";
  std::unique_lock<std::mutex> tools(tools_mutex);
  if (cleaning_up && !for_cleanup) fail("interrupted: not starting " + argv[0]);
  const pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    ::setpgid(0, 0);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    // The tools want a working directory the postgres user can read.
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  running_tools.insert(pid);
  tools.unlock();
  int status = 0;
  int waited = 0;
  while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  const int saved = errno;
  tools.lock();
  running_tools.erase(pid);
  tools.unlock();
  errno = saved;
  if (waited < 0) fail_errno("waitpid");
  return status;
}

// The signal cleanup's first step: no tool starts from now on, and those running are killed
// (runuser and the tool under it: their whole process group).
// SIGKILL takes effect a moment after kill() returns, so it then waits (up to 5 s) until the
// threads that started them have reaped them: a dying initdb must not write into a directory
// the cleanup is deleting.
void kill_running_tools() {
  {
    std::lock_guard<std::mutex> tools(tools_mutex);
    cleaning_up = true;
    for (const pid_t pid : running_tools) ::kill(-pid, SIGKILL);
  }
  for (int tries = 0; tries < 500; ++tries) {
    {
      std::lock_guard<std::mutex> tools(tools_mutex);
      if (running_tools.empty()) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Stops the server in `dir` (if one runs) and deletes the directory. A postmaster that a
// killed `pg_ctl start` had already forked lives in its own session and may write its pid file
// only after the first stop found none, so both steps repeat until the directory is gone.
void stop_and_remove(const fs::path& dir) {
  std::error_code error;
  for (int tries = 0; tries < 50 && fs::exists(dir, error); ++tries) {
    if (tries > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (fs::exists(dir / "data" / "postmaster.pid", error)) {
      try {
        spawn_tool({std::string(kBinDir) + "/pg_ctl", "-D", (dir / "data").string(), "-m",
                    "immediate", "-w", "stop"},
                   dir, true);
      } catch (...) {  // the directory goes anyway
      }
    }
    fs::remove_all(dir, error);
  }
}

// The directory of every TestServer of the process, for the signal cleanup: a copy, so the
// cleanup thread never touches a server object its owner may be using. A destructor holds the
// lock while it stops its server, so a signal never ends the process half-way through that.
std::mutex registry_mutex;
std::map<const TestServer*, fs::path> registry;  // guarded by registry_mutex

int signal_pipe[2] = {-1, -1};

extern "C" void on_cleanup_signal(int signal) {
  const auto byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] const ssize_t ignored = ::write(signal_pipe[1], &byte, 1);
}

}  // namespace

void TestServer::clean_up_on_signals() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (::pipe2(signal_pipe, O_CLOEXEC) != 0) fail_errno("pipe for the signal cleanup");
    std::thread([] {
      unsigned char signal = 0;
      while (::read(signal_pipe[0], &signal, 1) < 0 && errno == EINTR) {
      }
      // The pool's connections print the server's shutdown notices on stderr: not worth
      // showing after a Ctrl-C.
      const int saved_stderr = ::dup(STDERR_FILENO);
      if (const int null_fd = ::open("/dev/null", O_WRONLY); null_fd >= 0) {
        ::dup2(null_fd, STDERR_FILENO);
      }
      std::lock_guard<std::mutex> lock(registry_mutex);
      kill_running_tools();
      for (const auto& [server, dir] : registry) stop_and_remove(dir);
      const std::string message = std::string("\npoolsim: ") + ::strsignal(signal) +
                                  (registry.empty() ? "\n"
                                                    : ": stopped and deleted the throw-away "
                                                      "PostgreSQL server\n");
      [[maybe_unused]] const ssize_t ignored =
          ::write(saved_stderr, message.data(), message.size());
      ::_exit(128 + signal);
    }).detach();
    struct sigaction action {};
    action.sa_handler = on_cleanup_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (const int signal : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signal, &action, nullptr);
  });
}

TestServer::TestServer() {
  try {
    std::string pattern = (fs::temp_directory_path() / "poolsim-pg-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) fail_errno("mkdtemp");
    dir_ = pattern;
    {
      std::lock_guard<std::mutex> lock(registry_mutex);
      registry[this] = dir_;
    }
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
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.erase(this);
    cleanup();
    throw;
  }
}

TestServer::~TestServer() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry.erase(this);
  cleanup();
}

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

// Runs a PostgreSQL tool; throws with the tail of its log (and the server's) when it fails.
void TestServer::run_tool(const std::vector<std::string>& argv) const {
  const int status = spawn_tool(argv, dir_);
  const fs::path log = dir_ / "tools.log";
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
