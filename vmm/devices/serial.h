// An 8250/16550A UART register model (National Semiconductor PC16550D data sheet; Linux
// drivers/tty/serial/8250): THR/RBR, IER, IIR/FCR, LCR, MCR (with loopback), LSR, MSR, SCR and
// the DLL/DLM divisor latch. Transmission is instant (THR always empty), received bytes queue
// in a FIFO. The interrupt output is a level recomputed after every access; the machine drives
// an ISA line with it (KVM_IRQ_LINE), so the PIC/IOAPIC see an edge when it rises.
//
// Thread-safety: all methods lock; bus accesses come from vCPU threads and receive() from the
// input thread. The callbacks run under the lock and must not call back into the Serial.
#pragma once

#include <deque>
#include <functional>
#include <mutex>

#include "devices/bus.h"

namespace vmm {

class Serial : public BusDevice {
 public:
  static constexpr uint16_t kCom1Base = 0x3f8;
  static constexpr uint32_t kCom1Irq = 4;
  static constexpr size_t kRxCapacity = 4096;

  using TxFn = std::function<void(uint8_t)>;
  using IrqFn = std::function<void(bool level)>;
  Serial(TxFn tx, IrqFn irq) : tx_(std::move(tx)), irq_(std::move(irq)) {}

  void bus_read(uint64_t offset, std::span<uint8_t> data) override;
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override;
  // Registers as at power-on, the receive FIFO emptied, the line lowered.
  void reset() override;

  // Queues bytes for the guest; returns how many fit.
  size_t receive(std::span<const uint8_t> bytes);
  // Room left in the receive queue.
  size_t rx_space();

  // Register offsets (DLAB = LCR bit 7 selects DLL/DLM at 0/1).
  enum Reg : uint8_t { kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7 };
  static constexpr uint8_t kIerRdi = 0x01, kIerThri = 0x02;
  static constexpr uint8_t kIirNone = 0x01, kIirThri = 0x02, kIirRdi = 0x04, kIirFifo = 0xc0;
  static constexpr uint8_t kLcrDlab = 0x80;
  static constexpr uint8_t kMcrLoop = 0x10;
  static constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
  static constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02;

 private:
  uint8_t read_reg(uint8_t reg);
  void write_reg(uint8_t reg, uint8_t v);
  void update_irq();

  std::mutex mu_;
  TxFn tx_;
  IrqFn irq_;
  std::deque<uint8_t> rx_;
  uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0x08, scr_ = 0, dll_ = 0x0c, dlm_ = 0;
  bool fifo_ = false;
  bool thr_pending_ = false;  // THRE interrupt pending (cleared by reading IIR or writing THR)
  bool irq_level_ = false;
};

}  // namespace vmm
