// The MC146818 CMOS RTC at ports 0x70 (index) / 0x71 (data): the time registers answer the
// host's UTC time in BCD, 24-hour mode (status B = 0x02); status A reports no update in
// progress, status D reports valid RAM and time. Other CMOS bytes are plain storage.
//
// Thread-safety: locked.
#pragma once

#include <ctime>
#include <functional>
#include <mutex>

#include "devices/bus.h"

namespace vmm {

class Rtc : public BusDevice {
 public:
  static constexpr uint16_t kBase = 0x70;
  using Clock = std::function<std::time_t()>;
  explicit Rtc(Clock clock = [] { return std::time(nullptr); }) : clock_(std::move(clock)) {}

  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t read_index(uint8_t index);
  std::mutex mu_;
  Clock clock_;
  uint8_t index_ = 0;
  uint8_t ram_[128] = {};
};

// Ports that guests poke and that need no model (POST codes on 0x80, io_delay on 0xed, DMA
// page registers, VGA, absent COM2-4): reads answer 0xff, writes vanish, nothing is logged.
class PortSink : public BusDevice {
 public:
  void bus_read(uint64_t, std::span<uint8_t> data) override {
    for (auto& b : data) b = 0xff;
  }
  void bus_write(uint64_t, std::span<const uint8_t>) override {}
};

}  // namespace vmm
