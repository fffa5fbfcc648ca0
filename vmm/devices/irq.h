// What devices need from the VM to signal the guest and to be notified by it, kept abstract so
// device models run in tests without KVM (a fake records the calls) and on the KVM machine
// (irqfd, KVM_SET_GSI_ROUTING, KVM_IOEVENTFD, KVM_IRQ_LINE).
//
// Thread-safety: implementations are safe to call from any thread.
#pragma once

#include <cstdint>
#include <optional>

#include "img/status.h"

namespace vmm {

class InterruptController {
 public:
  virtual ~InterruptController() = default;
  // A GSI routed to the MSI message (address, data), with an irqfd bound to it. Returns the
  // eventfd; writing 1 to it raises the interrupt without a trip through the VMM.
  struct Msi {
    uint32_t gsi = 0;
    int irqfd = -1;
  };
  virtual img::Result<Msi> add_msi(uint64_t address, uint32_t data) = 0;
  // The guest reprogrammed the MSI-X table entry behind this route.
  virtual img::Status update_msi(const Msi& msi, uint64_t address, uint32_t data) = 0;
  virtual void remove_msi(const Msi& msi) = 0;
  // A legacy (ISA/IOAPIC) line, e.g. COM1 = 4. Edge devices pulse it.
  virtual void set_irq_line(uint32_t line, bool level) = 0;
};

class IoEventRegistry {
 public:
  virtual ~IoEventRegistry() = default;
  // An eventfd the kernel signals when the guest writes len bytes at addr (MMIO, or PIO if pio),
  // matching datamatch if given. The caller owns reading it; remove() closes it.
  virtual img::Result<int> add_ioeventfd(uint64_t addr, uint32_t len, bool pio,
                                         std::optional<uint64_t> datamatch) = 0;
  virtual void remove_ioeventfd(int fd) = 0;
};

}  // namespace vmm
