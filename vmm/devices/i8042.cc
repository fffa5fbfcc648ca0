#include "devices/i8042.h"

namespace vmm {

void I8042::bus_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = 0;
  if (offset == 0) {
    if (out_) {
      data[0] = *out_;
      out_.reset();
    }
  } else if (offset == 4) {
    data[0] = status_flags_ | (out_ ? kStatusObf : 0);
  }
}

void I8042::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  bool reset = false;
  {
    std::lock_guard lock(mu_);
    if (offset == 4) {
      status_flags_ |= kStatusCmd;
      reset = command(data[0]);
    } else if (offset == 0) {
      status_flags_ &= ~kStatusCmd;
      reset = data_write(data[0]);
    }
  }
  if (reset && on_reset_) on_reset_();
}

bool I8042::command(uint8_t cmd) {
  switch (cmd) {
    case 0x20:  // read controller configuration byte
      out_ = cmd_byte_;
      return false;
    case 0x60:  // write controller configuration byte (next data byte)
    case 0xd1:  // write output port (next data byte)
    case 0xd2:  // write keyboard output buffer
    case 0xd3:  // write aux output buffer
    case 0xd4:  // write to aux device: nothing attached, swallowed
      pending_cmd_ = cmd;
      return false;
    case 0xa7:  // disable aux
    case 0xa8:  // enable aux
    case 0xad:  // disable keyboard
    case 0xae:  // enable keyboard
      return false;
    case 0xa9:  // aux interface test: 0 = ok
    case 0xab:  // keyboard interface test: 0 = ok
      out_ = 0x00;
      return false;
    case 0xaa:  // controller self test
      out_ = 0x55;
      return false;
    case 0xd0:  // read output port: A20 on, no reset
      out_ = 0x03;
      return false;
    default:
      // 0xf0..0xff pulse output lines; bit 0 clear in the low nibble pulses CPU reset.
      return (cmd & 0xf0) == 0xf0 && !(cmd & 0x01);
  }
}

bool I8042::data_write(uint8_t v) {
  uint8_t cmd = pending_cmd_;
  pending_cmd_ = 0;
  switch (cmd) {
    case 0x60:
      cmd_byte_ = v;
      return false;
    case 0xd1:
      return !(v & 0x01);  // output port bit 0 is the CPU reset line (active low)
    case 0xd2:
    case 0xd3:
      out_ = v;
      return false;
    default:
      return false;  // bytes for the (absent) keyboard
  }
}

}  // namespace vmm
