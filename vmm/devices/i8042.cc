#include "devices/i8042.h"

namespace vmm {

namespace {

constexpr uint8_t kCmdByteKbdIrq = 0x01, kCmdByteXlate = 0x40;
constexpr uint8_t kAck = 0xfa;

}  // namespace

bool I8042::refill() {
  if (out_ || kbd_.empty()) return false;
  out_ = kbd_.front();
  kbd_.pop_front();
  return (cmd_byte_ & kCmdByteKbdIrq) != 0;
}

void I8042::pulse_irq() {
  // IRQ 1 is an ISA edge interrupt: one pulse per byte.
  if (!irq_) return;
  irq_(true);
  irq_(false);
}

void I8042::reset() {
  std::lock_guard lock(mu_);
  out_.reset();
  pending_cmd_ = 0;
  cmd_byte_ = 0x45;
  status_flags_ = kStatusSys;
  kbd_.clear();
  kbd_pending_cmd_ = 0;
}

void I8042::bus_read(uint64_t offset, std::span<uint8_t> data) {
  bool irq = false;
  {
    std::lock_guard lock(mu_);
    for (auto& b : data) b = 0;
    if (offset == 0) {
      if (out_) {
        data[0] = *out_;
        out_.reset();
      }
      irq = refill();
    } else if (offset == 4) {
      data[0] = status_flags_ | (out_ ? kStatusObf : 0);
    }
  }
  if (irq) pulse_irq();
}

void I8042::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  bool reset = false, irq = false;
  {
    std::lock_guard lock(mu_);
    if (offset == 4) {
      status_flags_ |= kStatusCmd;
      reset = command(data[0]);
    } else if (offset == 0) {
      status_flags_ &= ~kStatusCmd;
      reset = data_write(data[0]);
    }
    irq = refill();
  }
  if (irq) pulse_irq();
  if (reset && on_reset_) on_reset_();
}

void I8042::press_ctrl_alt_del() {
  bool irq;
  {
    std::lock_guard lock(mu_);
    // Make and break codes: Ctrl, Alt, Del (an E0-prefixed key) down, then up in reverse.
    static constexpr uint8_t kSet1[] = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
    static constexpr uint8_t kSet2[] = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0,
                                        0x71, 0xf0, 0x11, 0xf0, 0x14};
    bool xlate = cmd_byte_ & kCmdByteXlate;
    auto codes = xlate ? std::span<const uint8_t>(kSet1) : std::span<const uint8_t>(kSet2);
    if (kbd_.size() + codes.size() <= kMaxQueued)
      kbd_.insert(kbd_.end(), codes.begin(), codes.end());
    irq = refill();
  }
  if (irq) pulse_irq();
}

void I8042::keyboard_command(uint8_t v) {
  // PS/2 keyboard commands (IBM PC/AT technical reference; what Linux's atkbd sends).
  auto queue = [this](std::initializer_list<uint8_t> bytes) {
    if (kbd_.size() + bytes.size() <= kMaxQueued) kbd_.insert(kbd_.end(), bytes);
  };
  if (kbd_pending_cmd_) {  // the parameter byte of ED (LEDs), F3 (rate), F0 (scancode set)
    uint8_t cmd = kbd_pending_cmd_;
    kbd_pending_cmd_ = 0;
    if (cmd == 0xf0 && v == 0) {
      queue({kAck, static_cast<uint8_t>((cmd_byte_ & kCmdByteXlate) ? 0x41 : 0x02)});
    } else {
      queue({kAck});
    }
    return;
  }
  switch (v) {
    case 0xff:  // reset: ACK, then self-test passed
      queue({kAck, 0xaa});
      return;
    case 0xf2:  // get ID: an MF2 keyboard, AB 83 (AB 41 through translation)
      queue({kAck, 0xab, static_cast<uint8_t>((cmd_byte_ & kCmdByteXlate) ? 0x41 : 0x83)});
      return;
    case 0xee:  // echo
      queue({0xee});
      return;
    case 0xed:
    case 0xf3:
    case 0xf0:
      kbd_pending_cmd_ = v;
      queue({kAck});
      return;
    default:  // F4 enable, F5 disable, F6 defaults, and the rest: acknowledged
      queue({kAck});
      return;
  }
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
    case 0xd4:
      return false;  // for the aux device: none attached
    default:
      keyboard_command(v);  // no controller command pending: the byte is for the keyboard
      return false;
  }
}

}  // namespace vmm
