// The KVM implementations of InterruptController (GSI routing with the PIC/IOAPIC routes plus
// one MSI route per vector, irqfds, KVM_IRQ_LINE) and IoEventRegistry (KVM_IOEVENTFD).
//
// Thread-safety: every method locks; safe from any thread.
#pragma once

#include <linux/kvm.h>

#include <map>
#include <memory>
#include <mutex>

#include "devices/irq.h"

namespace vmm {

class KvmInterruptController : public InterruptController {
 public:
  // vm_fd must have an in-kernel irqchip. Installs the default legacy routing at once.
  static img::Result<std::unique_ptr<KvmInterruptController>> create(int vm_fd);
  ~KvmInterruptController() override;

  img::Result<Msi> add_msi(uint64_t address, uint32_t data) override;
  img::Status update_msi(const Msi& msi, uint64_t address, uint32_t data) override;
  void remove_msi(const Msi& msi) override;
  void set_irq_line(uint32_t line, bool level) override;

  // GSIs 0..23 belong to the PIC (0..15) and IOAPIC pins (0..23); MSI routes start above.
  static constexpr uint32_t kFirstMsiGsi = 24;
  static constexpr uint32_t kIoapicPins = 24;

 private:
  explicit KvmInterruptController(int vm_fd) : vm_fd_(vm_fd) {}
  // KVM_SET_GSI_ROUTING replaces the whole table, so it is always rebuilt in full.
  img::Status commit_routes_locked();

  struct Route {
    uint64_t address;
    uint32_t data;
    int irqfd;
  };
  int vm_fd_;
  std::mutex mu_;
  std::map<uint32_t, Route> msi_;  // gsi -> route
};

class KvmIoEventRegistry : public IoEventRegistry {
 public:
  explicit KvmIoEventRegistry(int vm_fd) : vm_fd_(vm_fd) {}
  ~KvmIoEventRegistry() override;
  img::Result<int> add_ioeventfd(uint64_t addr, uint32_t len, bool pio,
                                 std::optional<uint64_t> datamatch) override;
  void remove_ioeventfd(int fd) override;

 private:
  int vm_fd_;
  std::mutex mu_;
  std::map<int, kvm_ioeventfd> fds_;
};

}  // namespace vmm
