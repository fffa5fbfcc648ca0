#include "devices/rtc.h"

namespace vmm {
namespace {
uint8_t bcd(int v) { return static_cast<uint8_t>(((v / 10) << 4) | (v % 10)); }
}  // namespace

void Rtc::bus_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = 0xff;
  if (offset == 1) data[0] = read_index(index_);
}

void Rtc::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset == 0) {
    index_ = data[0] & 0x7f;  // bit 7 is the NMI mask
  } else if (offset == 1 && index_ >= 0x0e) {
    ram_[index_] = data[0];  // time and status registers are not settable
  }
}

uint8_t Rtc::read_index(uint8_t index) {
  std::time_t now = clock_();
  std::tm tm{};
  gmtime_r(&now, &tm);
  switch (index) {
    case 0x00: return bcd(tm.tm_sec);
    case 0x02: return bcd(tm.tm_min);
    case 0x04: return bcd(tm.tm_hour);
    case 0x06: return bcd(tm.tm_wday + 1);
    case 0x07: return bcd(tm.tm_mday);
    case 0x08: return bcd(tm.tm_mon + 1);
    case 0x09: return bcd(tm.tm_year % 100);
    case 0x32: return bcd((tm.tm_year + 1900) / 100);  // century
    case 0x0a: return 0x26;  // 32.768 kHz base, 1024 Hz rate, no update in progress
    case 0x0b: return 0x02;  // 24-hour, BCD, no interrupts
    case 0x0c: return 0x00;
    case 0x0d: return 0x80;  // valid RAM and time
    default: return ram_[index & 0x7f];
  }
}

}  // namespace vmm
