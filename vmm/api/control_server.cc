#include "api/control_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "img/unix_socket.h"

namespace vmm::api {
namespace {

// A socket file nobody accepts on is a leftover of a VMM that died: it may be replaced.
img::Status check_stale(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return {};  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    return img::invalid_argument("--control " + path + " exists and is not a socket");
  }
  int probe = img::unix_stream_connect(path, SOCK_CLOEXEC);
  if (probe >= 0) {
    ::close(probe);
    return img::invalid_argument("--control " + path + " is in use by a running vmm");
  }
  if (::unlink(path.c_str()) != 0) return img::io_error(errno, "removing stale " + path);
  return {};
}

}  // namespace

img::Result<std::unique_ptr<ControlServer>> ControlServer::listen(const std::string& path,
                                                                  const Dispatcher& d) {
  if (path.empty()) return img::invalid_argument("--control needs a socket path");
  RETURN_IF_ERROR(check_stale(path));
  // bind() creates the file with the umask applied: 0177 leaves 0600. Set-up runs before the
  // VMM's other threads create files, so the process-wide umask change races with nothing.
  mode_t old = ::umask(0177);
  int fd = img::unix_stream_listen(path, SOCK_CLOEXEC | SOCK_NONBLOCK, 4);
  int e = errno;
  ::umask(old);
  if (fd < 0) return img::io_error(e, "--control " + path);
  return std::unique_ptr<ControlServer>(new ControlServer(path, fd, d));
}

ControlServer::~ControlServer() {
  drop_client();
  if (loop_) loop_->remove(listen_fd_);
  ::close(listen_fd_);
  ::unlink(path_.c_str());
}

img::Status ControlServer::attach(EventLoop& loop) {
  loop_ = &loop;
  return loop.add(listen_fd_, EPOLLIN, [this](uint32_t) { on_accept(); });
}

void ControlServer::on_accept() {
  int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (c < 0) return;  // EAGAIN, or the peer went away already
  if (client_ >= 0) {
    std::string busy = error_line(
        {"Busy", "another client is connected to this VM's control socket; try again later"});
    (void)!::send(c, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(c);
    return;
  }
  client_ = c;
  in_ = LineBuffer();
  out_.clear();
  if (!loop_->add(c, EPOLLIN, [this](uint32_t ev) { on_client(ev); })) {
    ::close(c);
    client_ = -1;
    return;
  }
  send(dispatcher_.greeting());
}

void ControlServer::on_client(uint32_t events) {
  if (events & EPOLLOUT) flush_out();
  if (client_ < 0) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    char buf[16384];
    ssize_t n = ::recv(client_, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      drop_client();
      return;
    }
    if (n < 0) return;
    in_.feed(std::string_view(buf, static_cast<size_t>(n)));
    while (client_ >= 0) {
      auto line = in_.next();
      if (!line) break;
      if (line->too_long) {
        send(
            error_line({"InvalidRequest", img::strfmt("request line longer than %zu bytes, dropped",
                                                      kMaxLineBytes)}));
      } else if (line->text.find_first_not_of(" \t") != std::string::npos) {
        send(dispatcher_.handle_line(line->text));
      }
    }
  }
}

void ControlServer::send(const std::string& s) {
  if (client_ < 0) return;
  if (out_.size() + s.size() > kMaxPendingOut) {
    drop_client();  // it sends requests and never reads the replies
    return;
  }
  out_ += s;
  flush_out();
}

void ControlServer::flush_out() {
  while (client_ >= 0 && !out_.empty()) {
    ssize_t n = ::send(client_, out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      drop_client();  // EPIPE, ECONNRESET: the client is gone
      return;
    }
    out_.erase(0, static_cast<size_t>(n));
  }
  if (client_ >= 0)
    (void)loop_->modify(client_, out_.empty() ? EPOLLIN : uint32_t{EPOLLIN | EPOLLOUT});
}

void ControlServer::drop_client() {
  if (client_ < 0) return;
  loop_->remove(client_);
  ::close(client_);
  client_ = -1;
  out_.clear();
}

}  // namespace vmm::api
