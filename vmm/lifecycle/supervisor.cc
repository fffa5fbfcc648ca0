#include "lifecycle/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "img/unix_socket.h"

namespace vmm::lifecycle {
namespace {

int listen_unix(const std::string& path) {
  ::unlink(path.c_str());
  mode_t old = ::umask(0177);  // 0600: only the VM's user may attach
  int fd = img::unix_stream_listen(path, SOCK_CLOEXEC | SOCK_NONBLOCK, 4);
  ::umask(old);
  return fd;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

class Relay {
 public:
  Relay(int log_fd) : log_fd_(log_fd) {}
  ~Relay() {
    close_fd(serial_);
    close_fd(client_);
  }
  // Guest output: to console.log and the attached client. Returns false at EOF.
  bool pump_serial() {
    char buf[4096];
    ssize_t n = ::read(serial_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
      close_fd(serial_);
      return false;
    }
    if (logged_ + static_cast<size_t>(n) > kConsoleLogMax) {
      (void)!::ftruncate(log_fd_, 0);
      logged_ = 0;
    }
    logged_ += static_cast<size_t>(n);
    (void)!::write(log_fd_, buf, static_cast<size_t>(n));
    // A client that does not keep up loses output (it is in console.log); the guest never waits.
    if (client_ >= 0) ::send(client_, buf, static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
    return true;
  }
  // Keystrokes from the client go to the guest's serial port. What the port cannot take now (a
  // guest that does not read its UART) is dropped, as a full keyboard buffer drops keys: a
  // client typing faster than the guest reads must not stall the relay, and with it the guest's
  // output.
  void pump_client() {
    char buf[1024];
    ssize_t n = ::read(client_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      close_fd(client_);
      return;
    }
    for (ssize_t off = 0; serial_ >= 0 && off < n;) {
      ssize_t w =
          ::send(serial_, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += w;
    }
  }
  void accept_client(int listen_fd) {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    if (client_ >= 0) {
      static const char kBusy[] = "vmm: another client is attached to this console\n";
      ::send(c, kBusy, sizeof kBusy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(c);
      return;
    }
    client_ = c;
  }
  void accept_serial(int listen_fd) {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    close_fd(serial_);
    serial_ = c;
  }
  void drain_serial() {
    if (serial_ < 0) return;
    ::fcntl(serial_, F_SETFL, O_NONBLOCK);
    while (serial_ >= 0) {
      pollfd p{serial_, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0 || !pump_serial()) break;
    }
    close_fd(serial_);
  }
  int serial() const { return serial_; }
  int client() const { return client_; }

 private:
  int log_fd_;
  size_t logged_ = 0;
  int serial_ = -1;
  int client_ = -1;
};

pid_t spawn(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::signal(SIGPIPE, SIG_DFL);
  std::vector<char*> a;
  for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  ::execv(a[0], a.data());
  std::fprintf(stderr, "vmm: cannot run %s: %s\n", a[0], std::strerror(errno));
  ::_exit(127);
}

}  // namespace

void supervise(const StateDir& sd, const std::string& name,
               const std::vector<std::string>& run_args, const std::string& vmm_exe) {
  ::setsid();  // no controlling terminal: the VM outlives the shell that started it
  int null = ::open("/dev/null", O_RDWR);
  int log = ::open(sd.log(name).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (null >= 0) ::dup2(null, 0);
  if (log >= 0) {
    ::dup2(log, 1);
    ::dup2(log, 2);
  }
  if (null > 2) ::close(null);
  if (log > 2) ::close(log);
  ::signal(SIGPIPE, SIG_IGN);

  int console_log = ::open(sd.console_log(name).c_str(),
                           O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  int serial_listen = listen_unix(sd.serial(name));
  int console_listen = listen_unix(sd.console(name));
  if (console_log < 0 || serial_listen < 0 || console_listen < 0) {
    std::fprintf(stderr, "vmm: cannot set up the console sockets in %s: %s\n",
                 sd.run_dir(name).c_str(), std::strerror(errno));
    ::_exit(1);
  }
  std::vector<std::string> argv = {vmm_exe, "run"};
  argv.insert(argv.end(), run_args.begin(), run_args.end());
  argv.insert(argv.end(), {"--serial", "unix:" + sd.serial(name), "--control", sd.control(name)});

  int code = 1;
  do {
    pid_t child = spawn(argv);
    if (child < 0) {
      std::fprintf(stderr, "vmm: fork: %s\n", std::strerror(errno));
      break;
    }
    (void)write_pid(sd.pid(name), child);
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
    Relay relay(console_log);
    int status = 0;
    for (bool done = false; !done;) {
      pollfd p[5] = {{pidfd, POLLIN, 0},
                     {serial_listen, POLLIN, 0},
                     {console_listen, POLLIN, 0},
                     {relay.serial(), POLLIN, 0},
                     {relay.client(), POLLIN, 0}};
      // Without a pidfd (pre-5.3 kernel), look for the child's end every 100 ms.
      int n = ::poll(p, 5, pidfd < 0 ? 100 : -1);
      if (n < 0 && errno != EINTR) break;
      if (p[1].revents & POLLIN) relay.accept_serial(serial_listen);
      if (p[2].revents & POLLIN) relay.accept_client(console_listen);
      if (p[3].revents) relay.pump_serial();
      if (p[4].revents) relay.pump_client();
      if (pidfd < 0 || p[0].revents) done = ::waitpid(child, &status, WNOHANG) == child;
    }
    if (pidfd >= 0) ::close(pidfd);
    relay.drain_serial();
    ::unlink(sd.pid(name).c_str());
    if (WIFSIGNALED(status)) {
      std::fprintf(stderr, "vmm: the VM process %d was killed by signal %d\n", child,
                   WTERMSIG(status));
      code = 128 + WTERMSIG(status);
      break;
    }
    code = WEXITSTATUS(status);
    std::fprintf(stderr, "vmm: the VM process %d exited with code %d\n", child, code);
  } while (false);
  ::unlink(sd.serial(name).c_str());
  ::unlink(sd.console(name).c_str());
  ::unlink(sd.control(name).c_str());
  ::_exit(code);
}

}  // namespace vmm::lifecycle
