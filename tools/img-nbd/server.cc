// img-nbd's listener: see server.h.
#include "server.h"

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "img/unix_socket.h"

namespace imgnbd {

namespace {

int g_stop_fd = -1;  // the signal handler's only state

void on_signal(int) {
  uint64_t one = 1;
  ssize_t r = ::write(g_stop_fd, &one, sizeof one);
  (void)r;
}

}  // namespace

img::Result<int> listen_on(const ListenSpec& spec) {
  if (!spec.unix_path.empty()) {
    ::unlink(spec.unix_path.c_str());  // qemu-nbd replaces a stale socket too
    int fd = img::unix_stream_listen(spec.unix_path, SOCK_CLOEXEC, 16);
    if (fd < 0) return img::io_error(errno, "Failed to bind socket to " + spec.unix_path);
    return fd;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  int g = ::getaddrinfo(spec.bind_addr.c_str(), spec.port.c_str(), &hints, &res);
  if (g != 0) {
    return img::invalid_argument("address resolution failed for " + spec.bind_addr + ":" +
                                 spec.port + ": " + gai_strerror(g));
  }
  int err = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    err = errno;
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return img::io_error(err, "Failed to bind socket to " + spec.bind_addr + ":" + spec.port);
}

Server::Server(img::IoLoop& loop, int listen_fd, const img::nbd::ExportConfig& exp,
               const ServerOptions& opts)
    : loop_(loop), listen_fd_(listen_fd), exp_(exp), opts_(opts), changed_(loop) {}

Server::~Server() {
  if (stop_fd_ >= 0) {
    g_stop_fd = -1;
    ::close(stop_fd_);
  }
  if (tick_fd_ >= 0) ::close(tick_fd_);
}

img::Status Server::install_signals() {
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return img::io_error(errno, "eventfd");
  g_stop_fd = stop_fd_;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return {};
}

void Server::request_stop() {
  uint64_t one = 1;
  ssize_t r = ::write(stop_fd_, &one, sizeof one);
  (void)r;
}

img::Task<void> Server::stop_watch() {
  for (;;) {
    uint64_t v;
    if (::read(stop_fd_, &v, sizeof v) == sizeof v) break;
    (void)co_await loop_.poll(stop_fd_, POLLIN);
  }
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);  // wakes the accept loop's poll
  if (tick_fd_ >= 0) {                // and the reaper's, now
    itimerspec now{};
    now.it_value.tv_nsec = 1;
    ::timerfd_settime(tick_fd_, 0, &now, nullptr);
  }
  for (auto* c : conns_) c->close();
  changed_.notify_all();
}

img::Task<void> Server::accept_loop() {
  while (!stopping_) {
    if (opts_.shared != 0 && clients_ >= opts_.shared) {
      // qemu-nbd stops accepting at -e clients; the next one waits in the backlog.
      co_await changed_.wait();
      continue;
    }
    int ev = co_await loop_.poll(listen_fd_, POLLIN);
    if (stopping_) break;
    if (ev < 0 && ev != -EINTR) {
      std::fprintf(stderr, "img-nbd: waiting for clients: %s\n", std::strerror(-ev));
      request_stop();
      break;
    }
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;  // EAGAIN, or a client that left before we took it
    loop_.spawn(client(fd, next_id_++));
  }
}

img::Task<void> Server::client(int fd, unsigned id) {
  ++clients_;
  img::nbd::SocketConn conn(loop_, fd);
  conns_.insert(&conn);
  if (opts_.verbose) std::fprintf(stderr, "img-nbd: client %u connected\n", id);
  bool timed_out = false;
  if (opts_.handshake_s > 0) {
    handshaking_[&conn] = {
        std::chrono::steady_clock::now() + std::chrono::seconds(opts_.handshake_s), &timed_out};
  }
  auto neg = co_await img::nbd::negotiate(conn, exp_);
  handshaking_.erase(&conn);
  img::Status st;
  if (timed_out) {
    st = img::make_error(img::ErrorCode::kIo, "the handshake did not finish within " +
                                                  std::to_string(opts_.handshake_s) + " s");
  } else if (!neg) {
    st = img::Unexpected(neg.error());
  } else if (!neg->aborted) {
    st = co_await img::nbd::transmit(loop_, conn, exp_, *neg);
  }
  if (!st && !img::nbd::is_end_of_stream(st.error()) && !stopping_) {
    std::fprintf(stderr, "img-nbd: client %u: %s\n", id, st.error().message().c_str());
  } else if (opts_.verbose) {
    std::fprintf(stderr, "img-nbd: client %u disconnected\n", id);
  }
  conns_.erase(&conn);
  --clients_;
  changed_.notify_all();
  // Without -t, qemu-nbd exits once the last client has gone.
  if (!opts_.persistent && clients_ == 0 && !stopping_) request_stop();
}

img::Task<void> Server::handshake_reaper() {
  reaper_running_ = true;
  while (!stopping_) {
    uint64_t ticks;
    if (::read(tick_fd_, &ticks, sizeof ticks) != sizeof ticks) {
      int ev = co_await loop_.poll(tick_fd_, POLLIN);
      if (ev < 0 && ev != -EINTR) break;
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    for (auto& [conn, h] : handshaking_) {
      if (h.deadline <= now && !*h.timed_out) {
        *h.timed_out = true;
        conn->close();  // the handshake's read or write fails; client() says why
      }
    }
  }
  reaper_running_ = false;
  changed_.notify_all();
}

img::Task<void> Server::run() {
  loop_.spawn(stop_watch());
  if (opts_.handshake_s > 0) {
    tick_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    itimerspec every{};
    every.it_interval.tv_sec = every.it_value.tv_sec = 1;
    if (tick_fd_ >= 0 && ::timerfd_settime(tick_fd_, 0, &every, nullptr) == 0) {
      loop_.spawn(handshake_reaper());
    } else {
      std::fprintf(stderr, "img-nbd: no handshake limit: timerfd: %s\n", std::strerror(errno));
    }
  }
  co_await accept_loop();
  while (clients_ > 0 || reaper_running_) co_await changed_.wait();
  ::close(listen_fd_);
}

}  // namespace imgnbd
