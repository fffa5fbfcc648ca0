#include "devices/serial.h"

namespace vmm {

void Serial::bus_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = 0;
  if (offset < 8) data[0] = read_reg(static_cast<uint8_t>(offset));
  update_irq();
}

void Serial::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset < 8) write_reg(static_cast<uint8_t>(offset), data[0]);
  update_irq();
}

uint8_t Serial::read_reg(uint8_t reg) {
  switch (reg) {
    case kData:
      if (lcr_ & kLcrDlab) return dll_;
      if (rx_.empty()) return 0;
      {
        uint8_t b = rx_.front();
        rx_.pop_front();
        return b;
      }
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir: {
      uint8_t fifo = fifo_ ? kIirFifo : 0;
      if ((ier_ & kIerRdi) && !rx_.empty()) return fifo | kIirRdi;
      if ((ier_ & kIerThri) && thr_pending_) {
        thr_pending_ = false;  // reading IIR that reports THRE clears it
        return fifo | kIirThri;
      }
      return fifo | kIirNone;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return kLsrThre | kLsrTemt | (rx_.empty() ? 0 : kLsrDr);
    case kMsr:
      if (mcr_ & kMcrLoop) {
        // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return 0xb0;  // DCD, DSR, CTS: a cable is attached and ready
    case kScr:
      return scr_;
  }
  return 0;
}

void Serial::write_reg(uint8_t reg, uint8_t v) {
  switch (reg) {
    case kData:
      if (lcr_ & kLcrDlab) {
        dll_ = v;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (rx_.size() < kRxCapacity) rx_.push_back(v);
      } else {
        tx_(v);
      }
      thr_pending_ = true;  // sent at once, so the holding register is empty again
      return;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = v;
        return;
      }
      // Enabling THRI while THR is empty raises the interrupt (what the 16550 does and what
      // Linux's start_tx relies on).
      if ((v & kIerThri) && !(ier_ & kIerThri)) thr_pending_ = true;
      ier_ = v & 0x0f;
      return;
    case kIir:  // FCR
      fifo_ = v & kFcrEnable;
      if (v & kFcrClearRx) rx_.clear();
      return;
    case kLcr:
      lcr_ = v;
      return;
    case kMcr:
      mcr_ = v & 0x1f;
      return;
    case kScr:
      scr_ = v;
      return;
    default:  // LSR and MSR are read-only
      return;
  }
}

void Serial::reset() {
  std::lock_guard lock(mu_);
  rx_.clear();
  ier_ = 0;
  lcr_ = 0x03;
  mcr_ = 0x08;
  scr_ = 0;
  dll_ = 0x0c;
  dlm_ = 0;
  fifo_ = false;
  thr_pending_ = false;
  update_irq();
}

void Serial::update_irq() {
  bool level = ((ier_ & kIerRdi) && !rx_.empty()) || ((ier_ & kIerThri) && thr_pending_);
  if (level != irq_level_) {
    irq_level_ = level;
    irq_(level);
  }
}

size_t Serial::receive(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  size_t n = 0;
  while (n < bytes.size() && rx_.size() < kRxCapacity) rx_.push_back(bytes[n++]);
  update_irq();
  return n;
}

size_t Serial::rx_space() {
  std::lock_guard lock(mu_);
  return kRxCapacity - rx_.size();
}

}  // namespace vmm
