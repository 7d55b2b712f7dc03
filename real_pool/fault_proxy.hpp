// A TCP proxy on 127.0.0.1 that injects real network faults between a connection pool and
// PostgreSQL on localhost (these machines have no netem or iptables).
//
// One poll() thread serves every connection with non-blocking sockets; an eventfd wakes it for
// control calls and shutdown. Each connection has one bounded buffer per direction, and a FIN
// from one side is forwarded once that direction's buffer is flushed (half-close is kept).
//
// Faults, all taking effect before the control call returns (it waits for the loop to apply it):
// - connect delay: the upstream connect of each new client connection starts that much later
//   (the client's own connect succeeds at once, as with a slow server accept).
// - blackhole: nothing moves in either direction, bytes and FINs included: they wait (in the
//   proxy's buffers and the kernel's socket buffers) and are delivered when the blackhole ends,
//   as TCP delivers what a dead link swallowed on its next retransmission (real TCP adds its
//   back-off, 0.2 s doubling per try; here they go at once). New connections are accepted but
//   their upstream connect waits until the blackhole ends. A peer that gives up meanwhile (its
//   own timeout) closes its socket: the other side sees that after the blackhole, as on a
//   real network. Bytes are never lost mid-stream: TCP does not do that.
// - reset_all: every current connection is closed with RST (SO_LINGER 0) on both sides.
// - idle kill: a connection with no bytes moving for the threshold is closed with RST on both
//   sides without warning, like a middlebox dropping its state; peers see it on next use.
// An error on either side (RST, refused upstream connect) resets the other side too.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace poolsim::real_pool {

class FaultProxy {
 public:
  // Listens on 127.0.0.1:listen_port (0 picks a free port) and forwards every accepted connection
  // to target_host:target_port. The target must be a loopback address ("localhost", 127.0.0.0/8
  // or ::1), anything else throws std::invalid_argument; socket errors throw std::system_error.
  FaultProxy(std::string target_host, int target_port, int listen_port = 0);
  ~FaultProxy();  // stops the loop, closes every socket, joins the thread
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }

  void set_connect_delay(std::chrono::milliseconds delay);
  void set_blackhole(bool on);
  void reset_all();
  void set_idle_kill(std::chrono::milliseconds after);  // zero turns it off

  std::size_t connections() const { return connections_.load(); }  // currently proxied
  std::uint64_t accepted() const { return accepted_.load(); }
  std::uint64_t killed_idle() const { return killed_idle_.load(); }

 private:
  struct Settings {
    std::chrono::milliseconds connect_delay{0};
    std::chrono::milliseconds idle_kill{0};
    bool blackhole = false;
    std::uint64_t reset_generation = 0;
  };

  void apply_and_wait(std::unique_lock<std::mutex>& lock);   // called with settings_ changed
  bool take_settings(Settings& out, std::uint64_t& ticket);  // false once stopping
  void acknowledge(std::uint64_t ticket);
  void wake() const;
  void run();

  sockaddr_storage target_{};
  socklen_t target_len_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  int port_ = 0;

  std::mutex mutex_;
  std::condition_variable applied_cv_;
  Settings settings_;            // guarded by mutex_
  std::uint64_t requested_ = 0;  // guarded by mutex_: control calls made
  std::uint64_t applied_ = 0;    // guarded by mutex_: control calls the loop has applied
  bool stopping_ = false;        // guarded by mutex_

  std::atomic<std::size_t> connections_{0};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> killed_idle_{0};
  std::thread thread_;
};

}  // namespace poolsim::real_pool
