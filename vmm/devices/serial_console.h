// Where COM1 goes on the host: "stdio" (stdout; stdin feeds the guest, put in non-canonical
// no-echo mode only when it is a terminal, restored on exit), "file:PATH" (output only) or
// "unix:PATH" (connects to a listening unix stream socket; both directions).
// An input thread waits on the input fd and a stop eventfd and feeds the UART's FIFO.
//
// Thread-safety: write() may be called from any vCPU thread (single write(2) calls);
// start_input()/stop() from the owner.
#pragma once

#include <termios.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "devices/serial.h"
#include "img/status.h"

namespace vmm {

class SerialConsole {
 public:
  static img::Result<std::unique_ptr<SerialConsole>> open(const std::string& spec);
  ~SerialConsole();

  void write(uint8_t b);
  // Starts feeding input bytes into `uart` (no-op for file output).
  img::Status start_input(Serial* uart);
  void stop();

 private:
  SerialConsole() = default;
  void input_loop(Serial* uart);

  int out_fd_ = -1;
  int in_fd_ = -1;
  bool own_out_ = false;
  int stop_fd_ = -1;
  bool restore_tty_ = false;
  termios saved_tty_{};
  std::thread input_;
};

}  // namespace vmm
