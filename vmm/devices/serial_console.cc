#include "devices/serial_console.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "img/unix_socket.h"
#include "security/seccomp.h"

namespace vmm {

img::Result<std::unique_ptr<SerialConsole>> SerialConsole::open(const std::string& spec) {
  std::unique_ptr<SerialConsole> c(new SerialConsole());
  if (spec == "stdio") {
    c->out_fd_ = STDOUT_FILENO;
    c->in_fd_ = STDIN_FILENO;
  } else if (spec.starts_with("file:")) {
    std::string path = spec.substr(5);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return img::io_error(errno, "opening serial output " + path);
    c->out_fd_ = fd;
    c->own_out_ = true;
  } else if (spec.starts_with("unix:")) {
    std::string path = spec.substr(5);
    if (path.empty()) return img::invalid_argument("--serial unix: needs a socket path");
    int fd = img::unix_stream_connect(path, SOCK_CLOEXEC);
    if (fd < 0) {
      return img::io_error(errno, "connecting the serial port to " + path +
                                      " (start a listener first, e.g. socat UNIX-LISTEN:" + path +
                                      " -)");
    }
    c->out_fd_ = c->in_fd_ = fd;
    c->own_out_ = true;
  } else {
    return img::invalid_argument("--serial must be stdio, file:PATH or unix:PATH, not '" + spec +
                                 "'");
  }
  return c;
}

SerialConsole::~SerialConsole() {
  stop();
  if (restore_tty_) tcsetattr(in_fd_, TCSANOW, &saved_tty_);
  if (own_out_) ::close(out_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void SerialConsole::write(uint8_t b) {
  while (::write(out_fd_, &b, 1) < 0 && errno == EINTR) {
  }
}

img::Status SerialConsole::start_input(Serial* uart) {
  if (in_fd_ < 0) return {};
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return img::io_error(errno, "eventfd");
  if (isatty(in_fd_) && tcgetattr(in_fd_, &saved_tty_) == 0) {
    termios raw = saved_tty_;
    raw.c_lflag &= ~(ICANON | ECHO);  // ISIG stays: Ctrl-C still stops the VMM
    raw.c_iflag &= ~(ICRNL | IXON);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(in_fd_, TCSANOW, &raw) == 0) restore_tty_ = true;
  }
  input_ = std::thread([this, uart] { input_loop(uart); });
  return {};
}

void SerialConsole::stop() {
  if (input_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    input_.join();
  }
}

void SerialConsole::input_loop(Serial* uart) {
  if (auto s = security::enter_thread(security::ThreadKind::kDevice, "serial-input"); !s) {
    std::fprintf(stderr, "vmm: serial input stays off: %s\n", s.error().to_string().c_str());
    return;
  }
  uint8_t buf[256];
  size_t have = 0, pos = 0;
  for (;;) {
    pollfd p[2] = {{stop_fd_, POLLIN, 0}, {in_fd_, POLLIN, 0}};
    bool want_input = have == pos;
    int n = ::poll(p, want_input ? 2 : 1, want_input ? -1 : 10);  // FIFO full: retry in 10 ms
    if (n < 0 && errno != EINTR) return;
    if (p[0].revents) return;
    if (want_input && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = ::read(in_fd_, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        // EOF: keep waiting for stop only.
        pollfd s{stop_fd_, POLLIN, 0};
        while (::poll(&s, 1, -1) < 0 && errno == EINTR) {
        }
        return;
      }
      have = static_cast<size_t>(r);
      pos = 0;
    }
    if (pos < have) pos += uart->receive(std::span<const uint8_t>(buf + pos, have - pos));
  }
}

}  // namespace vmm
