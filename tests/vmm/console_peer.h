// The host end of `vmm --console socket=PATH` for the end-to-end tests: listens, accepts the
// VMM's connection, waits for the guest's trigger text, answers once and collects everything
// the guest sends until the connection closes (or nothing arrives for `timeout_ms`).
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "img/unix_socket.h"

namespace vmm_test {

struct ConsolePeer {
  int listen_fd = -1;
  std::string got;  // read by the test after t.join()
  std::thread t;

  bool listen_on(const std::string& path) {
    listen_fd = img::unix_stream_listen(path, SOCK_CLOEXEC, 1);
    return listen_fd >= 0;
  }
  void serve(const std::string& trigger, const std::string& answer, int timeout_ms = 240000) {
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    t = std::thread([this, trigger, answer, timeout_ms] {
      // Waits for `fd` to be readable; false on timeout or once finish() was called.
      auto wait = [this, timeout_ms](int fd) {
        pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        return poll(p, 2, timeout_ms) > 0 && p[0].revents != 0;
      };
      if (!wait(listen_fd)) return;
      int c = accept(listen_fd, nullptr, nullptr);
      if (c < 0) return;
      bool answered = false;
      char b[512];
      while (wait(c)) {
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
  // The VM ended: stops waiting for a connection that will never come (vmm failed before it
  // connected) and joins. What the VM sent before it closed its end is in `got` already.
  void finish() {
    if (t.joinable()) {
      // The stop only ends a wait on a descriptor with nothing to read: what the VM sent
      // before closing its end, and the end itself, are still read first.
      uint64_t one = 1;
      (void)!write(stop_fd_, &one, sizeof one);
      t.join();
    }
  }
  ~ConsolePeer() {
    finish();
    if (listen_fd >= 0) close(listen_fd);
    if (stop_fd_ >= 0) close(stop_fd_);
  }

 private:
  int stop_fd_ = -1;
};

}  // namespace vmm_test
