// ConsoleHost: the host end of the virtio console: where the guest's output goes and its input
// comes from. "stdio" (stdout; stdin, put in non-canonical no-echo mode while it is a terminal),
// "file=PATH" (output only, truncated), "socket=PATH" (connects to a listening unix stream socket:
// both directions), or a pair of descriptors given by the caller (tests; they are duplicated).
//
// Thread-safety: open/close on the owner thread; read/write on the console's server thread.
#pragma once

#include <termios.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "img/status.h"

namespace vmm::virtio::console {

struct ConsoleHostSpec {
  enum class Kind { kStdio, kFile, kSocket, kFds };
  Kind kind = Kind::kStdio;
  std::string path;  // kFile, kSocket
  int in_fd = -1;    // kFds: -1 for no input
  int out_fd = -1;   // kFds
};

class ConsoleHost {
 public:
  static img::Result<std::unique_ptr<ConsoleHost>> open(const ConsoleHostSpec& spec);
  ~ConsoleHost();

  int in_fd() const { return in_fd_; }    // -1: no input
  int out_fd() const { return out_fd_; }  // never -1
  // Writes without blocking on a socket (-EAGAIN when full); plain write(2) otherwise.
  // Returns bytes written or -errno.
  long write_some(std::span<const uint8_t> data);
  // After the input fd polled readable: bytes read into the spans (0 = end of input) or -errno.
  long read_some(std::span<const std::span<uint8_t>> bufs);
  // The terminal's size if stdout is one.
  bool window_size(uint16_t* cols, uint16_t* rows) const;

 private:
  ConsoleHost() = default;
  int in_fd_ = -1;
  int out_fd_ = -1;
  bool own_in_ = false, own_out_ = false;
  bool socket_ = false;
  bool restore_tty_ = false;
  termios saved_tty_{};
};

}  // namespace vmm::virtio::console
