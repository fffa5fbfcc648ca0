// StorageNet: a storage host and a VM host for end-to-end tests of disks served over the network,
// on one machine: two network namespaces of their own (each held by a forked child that only
// waits), joined by a veth pair, "storage" at 10.77.0.1/24 and "vm" at 10.77.0.2/24, loopback up
// in both. A command runs in one of them behind in_storage() or in_vm() (nsenter). Neither
// namespace is the host's, so the host's network never sees the addresses, and both vanish
// (the veth pair with them) when the destructor kills their holders.
//
// Needs root (CAP_SYS_ADMIN for unshare and nsenter), iproute2's `ip` and util-linux's nsenter;
// start() says which is missing so the test can skip with the reason.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace vmm_test {

class StorageNet {
 public:
  static constexpr const char* kStorageAddr = "10.77.0.1";
  static constexpr const char* kVmAddr = "10.77.0.2";

  StorageNet() = default;
  StorageNet(const StorageNet&) = delete;
  StorageNet& operator=(const StorageNet&) = delete;
  ~StorageNet() {
    for (pid_t p : {storage_, vm_}) {
      if (p > 0) {
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
      }
    }
  }

  // "" once both namespaces are up and joined; else why not (nothing is left behind).
  std::string start() {
    if (std::system("command -v ip >/dev/null && command -v nsenter >/dev/null") != 0) {
      return "iproute2's ip or util-linux's nsenter is not installed";
    }
    std::string why;
    storage_ = hold_namespace(why);
    if (storage_ < 0) return why;
    vm_ = hold_namespace(why);
    if (vm_ < 0) return why;
    const std::string s = in_storage(), v = in_vm();
    std::string cmd = s + "sh -ec 'ip link set lo up; ip link add st0 type veth peer name vm0; " +
                      "ip link set vm0 netns " + std::to_string(vm_) + "; ip addr add " +
                      kStorageAddr + "/24 dev st0; ip link set st0 up' && " + v +
                      "sh -ec 'ip link set lo up; ip addr add " + kVmAddr +
                      "/24 dev vm0; ip link set vm0 up'";
    if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0) {
      return "could not join the two namespaces with a veth pair (" + cmd + ")";
    }
    // Both ends report carrier (LOWER_UP) before anything is sent, or the first connect fails.
    for (int i = 0; i < 100; ++i) {
      if (std::system((s + "ip link show st0 | grep -q LOWER_UP && " + v +
                       "ip link show vm0 | grep -q LOWER_UP")
                          .c_str()) == 0) {
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "the veth pair between the namespaces never came up";
  }

  // Prefixes that run a shell command in either namespace.
  std::string in_storage() const { return enter(storage_); }
  std::string in_vm() const { return enter(vm_); }

 private:
  static std::string enter(pid_t p) {
    return "nsenter --net=/proc/" + std::to_string(p) + "/ns/net ";
  }

  // A child in a network namespace of its own that waits to be killed; -1 with why on failure.
  static pid_t hold_namespace(std::string& why) {
    int fds[2];
    if (::pipe(fds) != 0) {
      why = std::string("pipe: ") + std::strerror(errno);
      return -1;
    }
    pid_t pid = ::fork();
    if (pid == 0) {  // only async-signal-safe calls from here on
      ::close(fds[0]);
      int err = ::unshare(CLONE_NEWNET) == 0 ? 0 : errno;
      (void)!::write(fds[1], &err, sizeof err);
      ::close(fds[1]);
      if (err != 0) ::_exit(1);
      for (;;) ::pause();
    }
    ::close(fds[1]);
    int err = EIO;
    ssize_t n = pid > 0 ? ::read(fds[0], &err, sizeof err) : -1;
    ::close(fds[0]);
    if (pid < 0 || n != sizeof err || err != 0) {
      why = std::string("no network namespace: unshare(CLONE_NEWNET): ") + std::strerror(err);
      if (pid > 0) ::waitpid(pid, nullptr, 0);
      return -1;
    }
    return pid;
  }

  pid_t storage_ = -1, vm_ = -1;
};

}  // namespace vmm_test
