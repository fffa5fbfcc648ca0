// Running img-nbd (and qemu-nbd beside it) for the interop tests: start it on a unix socket in
// a temporary folder or on a TCP loopback port, with --fork and --pid-file (so the server
// listens when the command returns), and stop it by signal, waiting until it is gone.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tool_test_util.h"

namespace nbdtest {

inline const std::string kImgNbd = IMG_NBD_BINARY;

inline bool have(const std::string& tool) {
  return imgtest::sh("command -v " + tool).rc == 0;
}
#define REQUIRE_TOOL(t)                                                                 \
  do {                                                                                  \
    if (!::nbdtest::have(t)) GTEST_SKIP() << t " is not installed (see tools/setup.sh)"; \
  } while (0)

// A TCP port on the loopback that nothing listened on a moment ago (the kernel's pick).
inline int free_tcp_port(const char* addr = "127.0.0.1") {
  bool v6 = std::string(addr).find(':') != std::string::npos;
  int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    ::inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    ::inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof *a;
  }
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                    : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

// Where a server listens: a unix socket in the test folder, or TCP on a loopback address.
struct Listen {
  std::string tcp_addr;  // "" for a unix socket; "127.0.0.1" or "::1" for TCP
  static Listen tcp(const std::string& addr = "127.0.0.1") { return {addr}; }
};

class NbdServer {
 public:
  // binary: kImgNbd or "qemu-nbd"; args: everything but the socket, fork and pid file flags.
  NbdServer(const imgtest::TempDir& dir, const std::string& name, const std::string& binary,
            const std::string& args, const Listen& where = {})
      : sock_(dir.file(name + ".sock")), pidf_(dir.file(name + ".pid")), addr_(where.tcp_addr) {
    std::string listen = "-k '" + sock_ + "'";
    if (!addr_.empty()) {
      port_ = free_tcp_port(addr_.c_str());
      EXPECT_GT(port_, 0) << "no free TCP port on " << addr_;
      listen = "-b " + addr_ + " -p " + std::to_string(port_);
    }
    auto r =
        imgtest::sh("'" + binary + "' --fork --pid-file '" + pidf_ + "' " + listen + " " + args);
    EXPECT_EQ(r.rc, 0) << binary << " " << args << ": " << r.err;
    // The pid file may land a moment after --fork's parent returns (nbdkit's did): wait for it.
    for (int i = 0; i < 500 && r.rc == 0 && pid_ <= 0; ++i) {
      pid_ = std::atoi(imgtest::slurp(pidf_).c_str());
      if (pid_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~NbdServer() { stop(); }
  // Exited: no such process, or a zombie its (re)parent has not reaped yet (--fork makes the
  // server a child of whoever adopts orphans here).
  static bool gone(pid_t pid) {
    std::string st = imgtest::slurp("/proc/" + std::to_string(pid) + "/stat");
    size_t p = st.rfind(')');
    return st.empty() || (p != std::string::npos && p + 2 < st.size() && st[p + 2] == 'Z');
  }
  std::string uri(const std::string& exp = "") const {
    if (!addr_.empty()) {
      std::string host = addr_.find(':') != std::string::npos ? "[" + addr_ + "]" : addr_;
      return "nbd://" + host + ":" + std::to_string(port_) + "/" + exp;
    }
    return "nbd+unix:///" + exp + "?socket=" + sock_;
  }
  pid_t pid() const { return pid_; }
  // SIGTERM (or sig) and wait up to 10 s for the process to go. True if it went.
  bool stop(int sig = SIGTERM) {
    if (pid_ <= 0) return true;
    ::kill(pid_, sig);
    for (int i = 0; i < 1000; ++i) {
      if (gone(pid_)) {
        pid_ = 0;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  std::string sock_, pidf_, addr_;
  int port_ = 0;
  pid_t pid_ = 0;
};

// qemu-img map --output=json as (start, length, data, zero) runs, neighbours of one kind merged:
// what a client learns from block status, whatever the server's run lengths.
struct Run {
  uint64_t start, length;
  bool data, zero;
  bool operator==(const Run&) const = default;
};
inline std::vector<Run> map_runs(const std::string& json) {
  auto m = imgtest::flat_json(json);
  std::vector<Run> runs;
  for (int i = 0; m.count(std::to_string(i) + ".start"); ++i) {
    std::string p = std::to_string(i) + ".";
    Run r{std::stoull(m[p + "start"]), std::stoull(m[p + "length"]), m[p + "data"] == "true",
          m[p + "zero"] == "true"};
    if (!runs.empty() && runs.back().data == r.data && runs.back().zero == r.zero) {
      runs.back().length += r.length;
    } else {
      runs.push_back(r);
    }
  }
  return runs;
}
inline std::ostream& operator<<(std::ostream& o, const Run& r) {
  return o << "{" << r.start << "+" << r.length << (r.data ? " data" : "")
           << (r.zero ? " zero" : "") << "}";
}

}  // namespace nbdtest
