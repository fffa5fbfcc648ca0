// A client of a VM's control socket (docs/vmm-control.md): connect, read the greeting, send one
// request line, read one reply line; every step bounded by a timeout so a wedged VM cannot hang
// a lifecycle command.
//
// Thread-safety: one object per thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "img/status.h"

namespace vmm::lifecycle {

class ControlClient {
 public:
  // Fails with ECONNREFUSED/ENOENT for a socket nobody serves (a stale one).
  static img::Result<ControlClient> connect(const std::string& path, int timeout_ms = 5000);
  ControlClient(ControlClient&& o) noexcept
      : fd_(o.fd_), timeout_ms_(o.timeout_ms_), in_(std::move(o.in_)) {
    o.fd_ = -1;
  }
  ~ControlClient();

  // The "return" object of the command, or an error carrying the reply's "desc" (the error
  // class prefixed when it is not WrongState/InvalidArgument, which read well alone).
  img::Result<nlohmann::json> call(const std::string& command,
                                   const nlohmann::json& arguments = nullptr);

 private:
  ControlClient(int fd, int timeout_ms) : fd_(fd), timeout_ms_(timeout_ms) {}
  img::Result<std::string> read_line();
  int fd_;
  int timeout_ms_;
  std::string in_;
};

}  // namespace vmm::lifecycle
