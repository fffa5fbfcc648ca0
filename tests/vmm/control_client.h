// A client of `vmm run --control PATH` for the end-to-end tests: connects (retrying while vmm
// sets up), reads the greeting, sends one request line and reads its reply line.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "img/unix_socket.h"

namespace vmm_test {

struct ControlClient {
  using Json = nlohmann::json;
  int fd = -1;
  std::string greeting;

  ControlClient() = default;
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;
  ~ControlClient() { close_fd(); }

  void close_fd() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  // Connects to `path`, trying every 50 ms for `tries` times, and reads the greeting line.
  // A Busy greeting (another client holds the socket) counts as a failed try.
  bool connect_to(const std::string& path, int tries = 300) {
    for (int i = 0; i < tries; ++i) {
      fd = img::unix_stream_connect(path, SOCK_CLOEXEC);
      if (fd >= 0) {
        greeting = read_line();
        if (greeting.find("\"Busy\"") == std::string::npos) return true;
        close(fd);
        fd = -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // One line without its newline; what arrived so far if nothing more comes for `timeout_ms`.
  std::string read_line(int timeout_ms = 20000) {
    std::string s;
    char c;
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0 || read(fd, &c, 1) != 1) return s;
      if (c == '\n') return s;
      s += c;
    }
  }
  // Sends {"execute": name, "arguments": args}; the reply, or a discarded value if it was not
  // JSON (nothing came back, say).
  Json cmd(const std::string& name, Json args = nullptr) {
    Json req = {{"execute", name}};
    if (!args.is_null()) req["arguments"] = args;
    std::string line = req.dump() + "\n";
    // MSG_NOSIGNAL: a VM that ended meanwhile (the balloon peer polls until the guest is gone)
    // is a discarded reply, not a SIGPIPE that kills the test program.
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
      return Json(Json::value_t::discarded);
    }
    return Json::parse(read_line(), nullptr, false);
  }
};

}  // namespace vmm_test
