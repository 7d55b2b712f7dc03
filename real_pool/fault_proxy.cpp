#include "real_pool/fault_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

namespace poolsim::real_pool {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kBufferLimit = 256 * 1024;  // per direction; reading pauses when full
constexpr std::size_t kReadChunk = 64 * 1024;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// An owned file descriptor. close() sends FIN after queued data; abort() sends RST.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    close();
    fd_ = std::exchange(other.fd_, -1);
    return *this;
  }
  ~Fd() { close(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void close() {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }
  void abort() {
    if (fd_ < 0) return;
    const linger reset{.l_onoff = 1, .l_linger = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close();
  }

 private:
  int fd_ = -1;
};

// One direction of a connection: bytes read from one side waiting to be written to the other.
struct Pipe {
  std::string buffer;
  bool eof = false;   // FIN read from the source
  bool shut = false;  // FIN forwarded to the destination
};

enum class Io { kNothing, kProgress, kFailed };  // ordered: the worse outcome wins

struct Connection {
  enum class State { kDelaying, kConnecting, kOpen };
  Fd client;
  Fd upstream;
  State state = State::kDelaying;
  Clock::time_point connect_at;
  Clock::time_point last_activity;
  Pipe up;    // client -> upstream
  Pipe down;  // upstream -> client
  bool done = false;

  void abort() {
    client.abort();
    upstream.abort();
    done = true;
  }
};

Io read_into(int fd, Pipe& pipe) {
  std::array<char, kReadChunk> chunk;
  const std::size_t room = std::min(chunk.size(), kBufferLimit - pipe.buffer.size());
  const ssize_t n = ::recv(fd, chunk.data(), room, 0);
  if (n > 0) {
    pipe.buffer.append(chunk.data(), static_cast<std::size_t>(n));
    return Io::kProgress;
  }
  if (n == 0) {
    pipe.eof = true;
    return Io::kProgress;
  }
  return errno == EAGAIN || errno == EINTR ? Io::kNothing : Io::kFailed;
}

Io write_from(int fd, Pipe& pipe) {
  Io result = Io::kNothing;
  if (!pipe.buffer.empty()) {
    const ssize_t n = ::send(fd, pipe.buffer.data(), pipe.buffer.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? Io::kNothing : Io::kFailed;
    pipe.buffer.erase(0, static_cast<std::size_t>(n));
    result = Io::kProgress;
  }
  if (pipe.buffer.empty() && pipe.eof && !pipe.shut) {
    ::shutdown(fd, SHUT_WR);
    pipe.shut = true;
  }
  return result;
}

// In a blackhole nothing is read or written: bytes (and FINs) wait in the proxy's buffers and the
// kernel's socket buffers until it ends.
bool wants_read(const Pipe& pipe, bool blackhole) {
  return !blackhole && !pipe.eof && pipe.buffer.size() < kBufferLimit;
}

bool wants_write(const Pipe& pipe, bool blackhole) {
  return !blackhole && (!pipe.buffer.empty() || (pipe.eof && !pipe.shut));
}

// Serves one socket of an open connection: `in` is read from it, `out` is written to it.
Io serve(int fd, short revents, Pipe& in, Pipe& out, bool blackhole) {
  Io io = Io::kNothing;
  if (revents & POLLERR) return Io::kFailed;
  if ((revents & (POLLIN | POLLHUP)) && wants_read(in, blackhole)) io = read_into(fd, in);
  if ((revents & (POLLOUT | POLLHUP)) && wants_write(out, blackhole) && io != Io::kFailed) {
    io = std::max(io, write_from(fd, out));
  }
  return io;
}

void start_connect(Connection& c, const sockaddr_storage& target, socklen_t target_len) {
  c.upstream = Fd(::socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  c.state = Connection::State::kConnecting;
  if (c.upstream.get() < 0 ||
      (::connect(c.upstream.get(), reinterpret_cast<const sockaddr*>(&target), target_len) < 0 &&
       errno != EINPROGRESS)) {
    c.abort();
  }
}

// Accepts "localhost" and numeric loopback addresses only.
socklen_t parse_loopback_target(const std::string& host, int port, sockaddr_storage& out) {
  if (port <= 0 || port > 65535) throw std::invalid_argument("FaultProxy: bad target port");
  const auto net_port = htons(static_cast<std::uint16_t>(port));
  const std::string numeric = host == "localhost" ? "127.0.0.1" : host;
  sockaddr_in v4{};
  if (::inet_pton(AF_INET, numeric.c_str(), &v4.sin_addr) == 1 &&
      (ntohl(v4.sin_addr.s_addr) >> 24) == 127) {
    v4.sin_family = AF_INET;
    v4.sin_port = net_port;
    std::memcpy(&out, &v4, sizeof v4);
    return sizeof v4;
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, numeric.c_str(), &v6.sin6_addr) == 1 &&
      IN6_IS_ADDR_LOOPBACK(&v6.sin6_addr)) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = net_port;
    std::memcpy(&out, &v6, sizeof v6);
    return sizeof v6;
  }
  throw std::invalid_argument("FaultProxy: target must be a localhost address, not " + host);
}

}  // namespace

FaultProxy::FaultProxy(std::string target_host, int target_port, int listen_port) {
  target_len_ = parse_loopback_target(target_host, target_port, target_);
  if (listen_port < 0 || listen_port > 65535) {
    throw std::invalid_argument("FaultProxy: bad listen port");
  }
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (listener.get() < 0) throw_errno("FaultProxy: socket");
  const int one = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(listen_port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length) < 0) {
    throw_errno("FaultProxy: bind");
  }
  if (::listen(listener.get(), SOMAXCONN) < 0) throw_errno("FaultProxy: listen");
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    throw_errno("FaultProxy: getsockname");
  }
  Fd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (wake.get() < 0) throw_errno("FaultProxy: eventfd");
  port_ = ntohs(address.sin_port);
  listen_fd_ = listener.get();
  wake_fd_ = wake.get();
  thread_ = std::thread([this] { run(); });
  listener.release();  // closed by the destructor from now on
  wake.release();
}

FaultProxy::~FaultProxy() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake();
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void FaultProxy::set_connect_delay(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  settings_.connect_delay = delay;
  apply_and_wait(lock);
}

void FaultProxy::set_blackhole(bool on) {
  std::unique_lock lock(mutex_);
  settings_.blackhole = on;
  apply_and_wait(lock);
}

void FaultProxy::reset_all() {
  std::unique_lock lock(mutex_);
  ++settings_.reset_generation;
  apply_and_wait(lock);
}

void FaultProxy::set_idle_kill(std::chrono::milliseconds after) {
  std::unique_lock lock(mutex_);
  settings_.idle_kill = after;
  apply_and_wait(lock);
}

void FaultProxy::apply_and_wait(std::unique_lock<std::mutex>& lock) {
  const std::uint64_t ticket = ++requested_;
  wake();
  applied_cv_.wait(lock, [&] { return applied_ >= ticket; });
}

bool FaultProxy::take_settings(Settings& out, std::uint64_t& ticket) {
  std::lock_guard lock(mutex_);
  out = settings_;
  ticket = requested_;
  return !stopping_;
}

void FaultProxy::acknowledge(std::uint64_t ticket) {
  std::lock_guard lock(mutex_);
  applied_ = std::max(applied_, ticket);
  applied_cv_.notify_all();
}

void FaultProxy::wake() const {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void FaultProxy::run() {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  std::uint64_t reset_seen = 0;
  Settings s;
  std::uint64_t ticket = 0;
  while (take_settings(s, ticket)) {
    if (s.reset_generation != reset_seen) {
      reset_seen = s.reset_generation;
      for (Connection& c : conns) c.abort();
    }
    // Timers, and the deadline of the next one for poll().
    const Clock::time_point now = Clock::now();
    std::optional<Clock::time_point> next;
    const auto consider = [&](Clock::time_point t) { next = next ? std::min(*next, t) : t; };
    for (Connection& c : conns) {
      if (c.done) continue;
      if (c.state == Connection::State::kDelaying && !s.blackhole) {
        if (now >= c.connect_at) {
          start_connect(c, target_, target_len_);
        } else {
          consider(c.connect_at);
        }
      }
      if (s.idle_kill.count() > 0 && !c.done) {
        if (now - c.last_activity >= s.idle_kill) {
          c.abort();
          killed_idle_.fetch_add(1);
        } else {
          consider(c.last_activity + s.idle_kill);
        }
      }
    }
    std::erase_if(conns, [](const Connection& c) { return c.done; });
    connections_.store(conns.size());
    acknowledge(ticket);

    fds.assign({{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}});
    for (const Connection& c : conns) {
      const bool open = c.state == Connection::State::kOpen;
      short client_events = 0;
      short upstream_events = 0;
      if (wants_read(c.up, s.blackhole)) client_events |= POLLIN;
      if (open && wants_write(c.down, s.blackhole)) client_events |= POLLOUT;
      if (open && wants_read(c.down, s.blackhole)) upstream_events |= POLLIN;
      if (open && wants_write(c.up, s.blackhole)) upstream_events |= POLLOUT;
      if (c.state == Connection::State::kConnecting) upstream_events = POLLOUT;
      // poll() ignores negative fds: a socket we want nothing from cannot wake us.
      fds.push_back({client_events ? c.client.get() : -1, client_events, 0});
      fds.push_back({upstream_events ? c.upstream.get() : -1, upstream_events, 0});
    }
    int timeout_ms = -1;
    if (next) {
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now());
      timeout_ms = static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, 60'000));
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR)
      throw_errno("poll");  // cannot happen

    if (fds[0].revents != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof count);
    }
    const Clock::time_point io_time = Clock::now();
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short client_revents = fds[2 + 2 * i].revents;
      const short upstream_revents = fds[3 + 2 * i].revents;
      Io io = Io::kNothing;
      if (c.state == Connection::State::kConnecting) {
        if (upstream_revents != 0) {
          int error = 0;
          socklen_t length = sizeof error;
          ::getsockopt(c.upstream.get(), SOL_SOCKET, SO_ERROR, &error, &length);
          io = error == 0 ? Io::kProgress : Io::kFailed;
          c.state = Connection::State::kOpen;
        }
      } else if (upstream_revents != 0) {
        io = serve(c.upstream.get(), upstream_revents, c.down, c.up, s.blackhole);
      }
      if (client_revents != 0 && io != Io::kFailed) {
        io = std::max(io, serve(c.client.get(), client_revents, c.up, c.down, s.blackhole));
      }
      if (io == Io::kFailed) {
        c.abort();
      } else if (io == Io::kProgress) {
        c.last_activity = io_time;
      }
      if (c.up.shut && c.down.shut) c.done = true;  // both FINs forwarded: close quietly
    }
    std::erase_if(conns, [](const Connection& c) { return c.done; });

    while (fds[1].revents != 0) {
      Fd client(::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (client.get() < 0) break;  // EAGAIN, or an error we cannot fix here: try next round
      accepted_.fetch_add(1);
      Connection& c = conns.emplace_back();
      c.client = std::move(client);
      c.connect_at = io_time + s.connect_delay;
      c.last_activity = io_time;
    }
    connections_.store(conns.size());
  }
}

}  // namespace poolsim::real_pool
