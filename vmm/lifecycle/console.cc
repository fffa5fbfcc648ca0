// vmm console NAME: stdin and stdout joined to the VM's serial port through the supervisor's
// console socket (supervisor.h). Ctrl-] (0x1d, as virsh and telnet) detaches; so does the end
// of stdin. The terminal is put in raw mode only when stdin is one, and restored on every exit.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "img/unix_socket.h"
#include "lifecycle/commands.h"
#include "lifecycle/vm_access.h"

namespace vmm::lifecycle {
namespace {

constexpr char kEscape = 0x1d;  // Ctrl-]

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

class RawTty {
 public:
  RawTty() {
    if (!::isatty(0) || ::tcgetattr(0, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    active_ = ::tcsetattr(0, TCSANOW, &raw) == 0;
  }
  ~RawTty() {
    if (active_) ::tcsetattr(0, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

}  // namespace

int cmd_console(const StateDir& sd, const std::string& name) {
  int fd;
  {
    // The definition lock only while attaching: a console session may last for days.
    auto vm = open_vm(sd, name, LOCK_SH);
    if (!vm) return fail(vm.error().message());
    if (!lock_held(sd.lock(name))) return fail("VM '" + name + "' is not running");
    std::string path = sd.console(name);
    fd = img::unix_stream_connect(path, SOCK_CLOEXEC);
    if (fd < 0) {
      return fail("VM '" + name + "': cannot connect to its console " + path + ": " +
                  std::strerror(errno));
    }
  }
  std::fprintf(stderr, "Connected to domain '%s'\nEscape character is ^] (Ctrl + ])\n",
               name.c_str());
  int rc = 0;
  {
    RawTty tty;
    char buf[4096];
    for (bool done = false; !done;) {
      pollfd p[2] = {{0, POLLIN, 0}, {fd, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (p[1].revents) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
          rc = fail("VM '" + name + "': the console closed (the VM ended)");
          break;
        }
        if (!write_all(1, buf, static_cast<size_t>(n))) break;
      }
      if (p[0].revents) {
        ssize_t n = ::read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // end of stdin: detach
        const char* esc =
            static_cast<const char*>(std::memchr(buf, kEscape, static_cast<size_t>(n)));
        size_t keep = esc ? static_cast<size_t>(esc - buf) : static_cast<size_t>(n);
        if (keep && !write_all(fd, buf, keep)) break;
        done = esc != nullptr;
      }
    }
  }
  ::close(fd);
  if (rc == 0) std::fputs("\n", stderr);
  return rc;
}

}  // namespace vmm::lifecycle
