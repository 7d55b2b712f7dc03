// FaultProxy against a small echo server on localhost (no PostgreSQL needed).
//
// Every client socket has a receive timeout, so a proxy that loses or holds bytes makes a test
// fail rather than hang. Time bounds are lower bounds, or upper bounds of seconds.
#include "real_pool/fault_proxy.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace poolsim::real_pool {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Echoes every byte back and answers a FIN with a FIN, one thread per connection.
class EchoServer {
 public:
  EchoServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listen_fd_, SOMAXCONN) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error("echo server: cannot listen");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~EchoServer() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);  // unblocks the echo threads
    for (std::thread& t : workers_) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      std::lock_guard lock(mutex_);
      fds_.push_back(fd);
      workers_.emplace_back([fd] { echo(fd); });
    }
  }
  static void echo(int fd) {
    std::vector<char> buffer(64 * 1024);
    for (;;) {
      const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      if (::send(fd, buffer.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) return;
    }
    ::shutdown(fd, SHUT_WR);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

// A blocking client socket with a receive timeout.
class Client {
 public:
  explicit Client(int port, std::chrono::milliseconds receive_timeout = 3000ms) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    set_receive_timeout(receive_timeout);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("client: cannot connect");
    }
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  int fd() const { return fd_; }
  void set_receive_timeout(std::chrono::milliseconds timeout) {
    const timeval tv{.tv_sec = timeout.count() / 1000,
                     .tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  bool send_all(const std::string& data) {
    for (std::size_t sent = 0; sent < data.size();) {
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Up to `size` bytes; fewer on EOF, error or timeout (then errno says which).
  std::string receive(std::size_t size) {
    std::string data(size, '\0');
    std::size_t got = 0;
    while (got < size) {
      const ssize_t n = ::recv(fd_, data.data() + got, size - got, 0);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    data.resize(got);
    return data;
  }
  std::string echo(const std::string& data) {
    return send_all(data) ? receive(data.size()) : std::string();
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  // True if a read reports that the connection is gone (EOF or reset), not a timeout.
  bool is_closed() {
    char byte = 0;
    const ssize_t n = ::recv(fd_, &byte, 1, 0);
    return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
  }

 private:
  int fd_ = -1;
};

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit = 3000ms) {
  const auto deadline = Clock::now() + limit;
  while (!predicate()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(FaultProxy, PassesOneMegabyteBothWaysAndForwardsHalfClose) {
  EchoServer server;
  FaultProxy proxy("127.0.0.1", server.port());
  Client client(proxy.port());
  std::string payload(1 << 20, '\0');
  std::mt19937 random(42);
  for (char& byte : payload) byte = static_cast<char>(random());

  // Send while receiving: the echo cannot hold 1 MB in socket buffers alone.
  std::thread writer([&] {
    client.send_all(payload);
    ::shutdown(client.fd(), SHUT_WR);
  });
  const std::string echoed = client.receive(payload.size() + 1);  // +1: must stop at EOF
  writer.join();
  EXPECT_EQ(echoed.size(), payload.size());
  EXPECT_TRUE(echoed == payload);
  EXPECT_TRUE(client.is_closed());  // the echo server's FIN came back through the proxy
  EXPECT_EQ(proxy.accepted(), 1u);
  EXPECT_TRUE(eventually([&] { return proxy.connections() == 0; }));
}

TEST(FaultProxy, ServesManyConcurrentConnections) {
  EchoServer server;
  FaultProxy proxy("localhost", server.port());
  constexpr int kClients = 64;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<Client>(proxy.port()));
  for (int i = 0; i < kClients; ++i)
    ASSERT_TRUE(clients[i]->send_all("hello " + std::to_string(i)));
  for (int i = 0; i < kClients; ++i) {
    const std::string expected = "hello " + std::to_string(i);
    EXPECT_EQ(clients[i]->receive(expected.size()), expected);
  }
  EXPECT_EQ(proxy.accepted(), static_cast<std::uint64_t>(kClients));
  EXPECT_EQ(proxy.connections(), static_cast<std::size_t>(kClients));
  EXPECT_EQ(server.accepted(), kClients);
  clients.clear();
  EXPECT_TRUE(eventually([&] { return proxy.connections() == 0; }));
}

TEST(FaultProxy, DelaysTheUpstreamConnect) {
  EchoServer server;
  FaultProxy proxy("127.0.0.1", server.port());
  proxy.set_connect_delay(300ms);
  const auto start = Clock::now();
  Client client(proxy.port());
  EXPECT_EQ(client.echo("ping"), "ping");
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, 300ms);
  EXPECT_LT(elapsed, 3s);
}

// A blackhole holds everything, as a dead link does to TCP: nothing arrives while it lasts,
// everything (bytes, a FIN, a new connection's upstream connect) goes through when it ends.
TEST(FaultProxy, BlackholeHoldsBytesAndNewConnectionsUntilItEnds) {
  EchoServer server;
  FaultProxy proxy("127.0.0.1", server.port());
  Client client(proxy.port(), 200ms);
  ASSERT_EQ(client.echo("before"), "before");
  Client closing(proxy.port(), 200ms);
  ASSERT_EQ(closing.echo("x"), "x");

  proxy.set_blackhole(true);
  EXPECT_TRUE(client.send_all("held"));
  EXPECT_EQ(client.receive(4), "");  // nothing arrives: the receive times out
  EXPECT_EQ(errno, EAGAIN);
  Client late(proxy.port(), 200ms);  // accepted, but not forwarded
  EXPECT_TRUE(late.send_all("late"));
  EXPECT_TRUE(eventually([&] { return proxy.accepted() == 3; }));
  closing.shutdown_write();  // its FIN waits too: the echo server does not close
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(server.accepted(), 2);
  EXPECT_EQ(proxy.connections(), 3u);
  EXPECT_EQ(closing.receive(1), "");
  EXPECT_EQ(errno, EAGAIN);  // a timeout, not the echo server's FIN

  proxy.set_blackhole(false);
  EXPECT_EQ(client.receive(4), "held");  // delivered late, not lost
  EXPECT_EQ(late.receive(4), "late");    // its upstream connect went ahead, then its bytes
  EXPECT_TRUE(closing.is_closed());      // the FIN went through, the echo server's came back
  EXPECT_EQ(client.echo("after"), "after");
  EXPECT_EQ(server.accepted(), 3);
}

TEST(FaultProxy, ResetAllResetsEveryConnection) {
  EchoServer server;
  FaultProxy proxy("127.0.0.1", server.port());
  Client a(proxy.port());
  Client b(proxy.port());
  ASSERT_EQ(a.echo("a"), "a");
  ASSERT_EQ(b.echo("b"), "b");
  proxy.reset_all();
  EXPECT_EQ(proxy.connections(), 0u);
  EXPECT_TRUE(a.is_closed());
  EXPECT_TRUE(b.is_closed());
  Client c(proxy.port());  // the proxy itself still works
  EXPECT_EQ(c.echo("c"), "c");
}

TEST(FaultProxy, IdleKillDropsIdleConnectionsOnly) {
  EchoServer server;
  FaultProxy proxy("127.0.0.1", server.port());
  proxy.set_idle_kill(300ms);
  Client idle(proxy.port());
  Client active(proxy.port());
  ASSERT_EQ(idle.echo("x"), "x");
  for (int i = 0; i < 16; ++i) {  // 800 ms of traffic, a message every 50 ms
    ASSERT_EQ(active.echo("tick"), "tick");
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(proxy.killed_idle(), 1u);
  EXPECT_EQ(proxy.connections(), 1u);
  idle.send_all("x");  // the client finds out on its next use
  EXPECT_TRUE(idle.is_closed());
  EXPECT_EQ(active.echo("still here"), "still here");
}

TEST(FaultProxy, ResetsTheClientWhenTheUpstreamRefuses) {
  int closed_port = 0;
  {
    EchoServer gone;
    closed_port = gone.port();
  }
  FaultProxy proxy("127.0.0.1", closed_port);
  Client client(proxy.port());
  EXPECT_TRUE(client.is_closed());
}

TEST(FaultProxy, RefusesTargetsOutsideLocalhost) {
  EXPECT_THROW(FaultProxy("10.0.0.1", 5432), std::invalid_argument);
  EXPECT_THROW(FaultProxy("8.8.8.8", 5432), std::invalid_argument);
  EXPECT_THROW(FaultProxy("example.com", 5432), std::invalid_argument);
  EXPECT_THROW(FaultProxy("2001:db8::1", 5432), std::invalid_argument);
  EXPECT_THROW(FaultProxy("127.0.0.1", 0), std::invalid_argument);
  EXPECT_NO_THROW(FaultProxy("localhost", 5432));
  EXPECT_NO_THROW(FaultProxy("127.0.0.2", 5432));
  EXPECT_NO_THROW(FaultProxy("::1", 5432));
}

TEST(FaultProxy, DestructorClosesOpenConnections) {
  EchoServer server;
  std::vector<std::unique_ptr<Client>> clients;
  {
    FaultProxy proxy("127.0.0.1", server.port());
    proxy.set_connect_delay(10s);  // one connection still waiting for its upstream connect
    clients.push_back(std::make_unique<Client>(proxy.port()));
    ASSERT_TRUE(eventually([&] { return proxy.connections() == 1; }));
    proxy.set_connect_delay(0ms);
    for (int i = 0; i < 4; ++i) {
      clients.push_back(std::make_unique<Client>(proxy.port()));
      ASSERT_EQ(clients.back()->echo("hi"), "hi");
    }
    EXPECT_EQ(proxy.connections(), 5u);
  }
  for (auto& client : clients) EXPECT_TRUE(client->is_closed());
}

}  // namespace
}  // namespace poolsim::real_pool
