#include "kvm/kvm_irq.h"

#include "kvm/kvm_abi.h"

#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace vmm {

img::Result<std::unique_ptr<KvmInterruptController>> KvmInterruptController::create(int vm_fd) {
  std::unique_ptr<KvmInterruptController> c(new KvmInterruptController(vm_fd));
  std::lock_guard lock(c->mu_);
  RETURN_IF_ERROR(c->commit_routes_locked());
  return c;
}

KvmInterruptController::~KvmInterruptController() {
  for (auto& [gsi, r] : msi_) ::close(r.irqfd);
}

img::Status KvmInterruptController::commit_routes_locked() {
  // The same legacy table KVM installs by default (kvm_setup_default_irq_routing): GSI n goes
  // to PIC pin n (n < 16) and IOAPIC pin n.
  std::vector<kvm_irq_routing_entry> e;
  for (uint32_t i = 0; i < 16; ++i) {
    kvm_irq_routing_entry r{};
    r.gsi = i;
    r.type = KVM_IRQ_ROUTING_IRQCHIP;
    r.u.irqchip.irqchip = i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
    r.u.irqchip.pin = i % 8;
    e.push_back(r);
  }
  for (uint32_t i = 0; i < kIoapicPins; ++i) {
    kvm_irq_routing_entry r{};
    r.gsi = i;
    r.type = KVM_IRQ_ROUTING_IRQCHIP;
    r.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
    r.u.irqchip.pin = i;
    e.push_back(r);
  }
  for (const auto& [gsi, m] : msi_) {
    kvm_irq_routing_entry r{};
    r.gsi = gsi;
    r.type = KVM_IRQ_ROUTING_MSI;
    r.u.msi.address_lo = static_cast<uint32_t>(m.address);
    r.u.msi.address_hi = static_cast<uint32_t>(m.address >> 32);
    r.u.msi.data = m.data;
    e.push_back(r);
  }
  // struct kvm_irq_routing {u32 nr; u32 flags; entries[]}: see kvm_abi.h for why by hand.
  std::vector<uint64_t> buf = kvm_abi::pack(e, static_cast<uint32_t>(e.size()));
  if (::ioctl(vm_fd_, kvm_abi::kSetGsiRouting, buf.data()) < 0) {
    return img::io_error(errno, "KVM_SET_GSI_ROUTING");
  }
  return {};
}

img::Result<InterruptController::Msi> KvmInterruptController::add_msi(uint64_t address,
                                                                      uint32_t data) {
  std::lock_guard lock(mu_);
  uint32_t gsi = kFirstMsiGsi;
  while (msi_.contains(gsi)) ++gsi;
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return img::io_error(errno, "eventfd for an MSI");
  msi_[gsi] = Route{address, data, fd};
  if (auto s = commit_routes_locked(); !s) {
    msi_.erase(gsi);
    ::close(fd);
    return img::Unexpected(s.error());
  }
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(fd);
  irqfd.gsi = gsi;
  if (::ioctl(vm_fd_, KVM_IRQFD, &irqfd) < 0) {
    int e = errno;
    msi_.erase(gsi);
    ::close(fd);
    (void)commit_routes_locked();
    return img::io_error(e, "KVM_IRQFD");
  }
  return Msi{gsi, fd};
}

img::Status KvmInterruptController::update_msi(const Msi& msi, uint64_t address, uint32_t data) {
  std::lock_guard lock(mu_);
  auto it = msi_.find(msi.gsi);
  if (it == msi_.end()) return img::invalid_argument(img::strfmt("no MSI route at GSI %u", msi.gsi));
  if (it->second.address == address && it->second.data == data) return {};
  it->second.address = address;
  it->second.data = data;
  return commit_routes_locked();
}

void KvmInterruptController::remove_msi(const Msi& msi) {
  std::lock_guard lock(mu_);
  auto it = msi_.find(msi.gsi);
  if (it == msi_.end()) return;
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(it->second.irqfd);
  irqfd.gsi = msi.gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  (void)::ioctl(vm_fd_, KVM_IRQFD, &irqfd);
  ::close(it->second.irqfd);
  msi_.erase(it);
  if (auto s = commit_routes_locked(); !s) {
    std::fprintf(stderr, "vmm: removing MSI route: %s\n", s.error().to_string().c_str());
  }
}

void KvmInterruptController::set_irq_line(uint32_t line, bool level) {
  kvm_irq_level irq{};
  irq.irq = line;
  irq.level = level ? 1 : 0;
  // No lock: KVM_IRQ_LINE is a single atomic update in the kernel.
  if (::ioctl(vm_fd_, KVM_IRQ_LINE, &irq) < 0) {
    std::fprintf(stderr, "vmm: KVM_IRQ_LINE %u: errno %d\n", line, errno);
  }
}

KvmIoEventRegistry::~KvmIoEventRegistry() {
  for (auto& [fd, e] : fds_) ::close(fd);
}

img::Result<int> KvmIoEventRegistry::add_ioeventfd(uint64_t addr, uint32_t len, bool pio,
                                                   std::optional<uint64_t> datamatch) {
  if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8) {
    return img::invalid_argument(img::strfmt("ioeventfd length %u is not 0, 1, 2, 4 or 8", len));
  }
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return img::io_error(errno, "eventfd for an ioeventfd");
  kvm_ioeventfd e{};
  e.addr = addr;
  e.len = len;
  e.fd = fd;
  if (pio) e.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    e.datamatch = *datamatch;
  }
  if (::ioctl(vm_fd_, KVM_IOEVENTFD, &e) < 0) {
    int err = errno;
    ::close(fd);
    return img::io_error(err, img::strfmt("KVM_IOEVENTFD at 0x%llx", (unsigned long long)addr));
  }
  std::lock_guard lock(mu_);
  fds_[fd] = e;
  return fd;
}

void KvmIoEventRegistry::remove_ioeventfd(int fd) {
  std::lock_guard lock(mu_);
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  kvm_ioeventfd e = it->second;
  e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  (void)::ioctl(vm_fd_, KVM_IOEVENTFD, &e);
  ::close(fd);
  fds_.erase(it);
}

}  // namespace vmm
