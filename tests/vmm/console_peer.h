// The host end of `vmm --console socket=PATH` for the end-to-end tests: listens, accepts the
// VMM's connection, waits for the guest's trigger text, answers once and collects everything
// the guest sends until the connection closes (or nothing arrives for `timeout_ms`).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

namespace vmm_test {

struct ConsolePeer {
  int listen_fd = -1;
  std::string got;  // read by the test after t.join()
  std::thread t;

  bool listen_on(const std::string& path) {
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    return bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(listen_fd, 1) == 0;
  }
  void serve(const std::string& trigger, const std::string& answer, int timeout_ms = 240000) {
    t = std::thread([this, trigger, answer, timeout_ms] {
      pollfd p{listen_fd, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) return;
      int c = accept(listen_fd, nullptr, nullptr);
      if (c < 0) return;
      bool answered = false;
      char b[512];
      for (;;) {
        pollfd q{c, POLLIN, 0};
        if (poll(&q, 1, timeout_ms) <= 0) break;
        ssize_t n = read(c, b, sizeof b);
        if (n <= 0) break;
        got.append(b, static_cast<size_t>(n));
        if (!answered && got.find(trigger) != std::string::npos) {
          answered = write(c, answer.data(), answer.size()) == static_cast<ssize_t>(answer.size());
        }
      }
      close(c);
    });
  }
  ~ConsolePeer() {
    if (t.joinable()) t.join();
    if (listen_fd >= 0) close(listen_fd);
  }
};

}  // namespace vmm_test
