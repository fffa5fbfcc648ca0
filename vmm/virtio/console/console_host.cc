#include "virtio/console/console_host.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "img/unix_socket.h"

namespace vmm::virtio::console {

img::Result<std::unique_ptr<ConsoleHost>> ConsoleHost::open(const ConsoleHostSpec& spec) {
  std::unique_ptr<ConsoleHost> h(new ConsoleHost());
  switch (spec.kind) {
    case ConsoleHostSpec::Kind::kStdio:
      h->in_fd_ = STDIN_FILENO;
      h->out_fd_ = STDOUT_FILENO;
      if (isatty(h->in_fd_) && tcgetattr(h->in_fd_, &h->saved_tty_) == 0) {
        termios raw = h->saved_tty_;
        raw.c_lflag &= ~(ICANON | ECHO);  // ISIG stays: Ctrl-C still stops the VMM
        raw.c_iflag &= ~(ICRNL | IXON);
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(h->in_fd_, TCSANOW, &raw) == 0) h->restore_tty_ = true;
      }
      break;
    case ConsoleHostSpec::Kind::kFile: {
      int fd = ::open(spec.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return img::io_error(errno, "opening console output " + spec.path);
      h->out_fd_ = fd;
      h->own_out_ = true;
      break;
    }
    case ConsoleHostSpec::Kind::kSocket: {
      if (spec.path.empty()) return img::invalid_argument("--console socket= needs a path");
      int fd = img::unix_stream_connect(spec.path, SOCK_CLOEXEC);
      if (fd < 0) {
        return img::io_error(
            errno, "connecting the console to " + spec.path +
                       " (start a listener first, e.g. socat UNIX-LISTEN:" + spec.path + " -)");
      }
      h->in_fd_ = h->out_fd_ = fd;
      h->own_out_ = true;
      h->socket_ = true;
      break;
    }
    case ConsoleHostSpec::Kind::kFds: {
      if (spec.out_fd < 0) return img::invalid_argument("console: no output descriptor");
      h->out_fd_ = ::fcntl(spec.out_fd, F_DUPFD_CLOEXEC, 0);
      if (h->out_fd_ < 0) return img::io_error(errno, "dup");
      h->own_out_ = true;
      if (spec.in_fd >= 0) {
        h->in_fd_ = ::fcntl(spec.in_fd, F_DUPFD_CLOEXEC, 0);
        if (h->in_fd_ < 0) return img::io_error(errno, "dup");
        h->own_in_ = true;
      }
      int type = 0;
      socklen_t len = sizeof type;
      h->socket_ = ::getsockopt(h->out_fd_, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
      break;
    }
  }
  return h;
}

ConsoleHost::~ConsoleHost() {
  if (restore_tty_) tcsetattr(in_fd_, TCSANOW, &saved_tty_);
  if (own_in_) ::close(in_fd_);
  if (own_out_) ::close(out_fd_);
}

long ConsoleHost::write_some(std::span<const uint8_t> data) {
  while (true) {
    ssize_t n = socket_ ? ::send(out_fd_, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                        : ::write(out_fd_, data.data(), data.size());
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

long ConsoleHost::read_some(std::span<const std::span<uint8_t>> bufs) {
  std::vector<iovec> iov;
  iov.reserve(bufs.size());
  for (auto b : bufs) iov.push_back({b.data(), b.size()});
  while (true) {
    ssize_t n;
    if (socket_) {
      msghdr m{};
      m.msg_iov = iov.data();
      m.msg_iovlen = iov.size();
      n = ::recvmsg(in_fd_, &m, MSG_DONTWAIT);
    } else {
      n = ::readv(in_fd_, iov.data(), static_cast<int>(iov.size()));
    }
    if (n >= 0) return n;
    if (errno != EINTR) return -errno;
  }
}

bool ConsoleHost::window_size(uint16_t* cols, uint16_t* rows) const {
  winsize ws{};
  if (!isatty(out_fd_) || ::ioctl(out_fd_, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0) return false;
  *cols = ws.ws_col;
  *rows = ws.ws_row;
  return true;
}

}  // namespace vmm::virtio::console
