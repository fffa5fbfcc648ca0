#include "pci/pci_bus.h"

#include <cstdio>
#include <cstring>

namespace vmm {
namespace {

// 00:00.0, a host bridge with nothing behind it but bus 0 (vendor/device as other lean VMMs use).
class HostBridge final : public PciDevice {
 public:
  HostBridge() : PciDevice(PciIds{.vendor = 0x8086, .device = 0x0d57, .class_code = 0x060000}) {}
  void bar_read(unsigned, uint64_t, std::span<uint8_t> data) override {
    std::memset(data.data(), 0xff, data.size());
  }
  void bar_write(unsigned, uint64_t, std::span<const uint8_t>) override {}
};

// What the MMIO bus holds for one BAR: forwards to the device while memory decode is on.
class BarWindow final : public BusDevice {
 public:
  BarWindow(std::shared_ptr<PciDevice> dev, unsigned bar) : dev_(std::move(dev)), bar_(bar) {}
  void bus_read(uint64_t offset, std::span<uint8_t> data) override {
    if (!dev_->config_space().memory_enabled()) {
      std::memset(data.data(), 0xff, data.size());
      return;
    }
    dev_->bar_read(bar_, offset, data);
  }
  void bus_write(uint64_t offset, std::span<const uint8_t> data) override {
    if (dev_->config_space().memory_enabled()) dev_->bar_write(bar_, offset, data);
  }

 private:
  std::shared_ptr<PciDevice> dev_;
  unsigned bar_;
};

}  // namespace

PciBus::PciBus(Bus& mmio, uint64_t mmio_start, uint64_t mmio_end)
    : mmio_(mmio), mmio_end_(mmio_end), next_mmio_(mmio_start) {
  slots_[0] = std::make_shared<HostBridge>();
  slots_[0]->config_space().save_power_on_state();
}

PciBus::~PciBus() {
  std::lock_guard lock(mu_);
  for (unsigned s = 0; s < kSlots; ++s) {
    for (auto& m : maps_[s]) {
      if (m.mapped) (void)mmio_.remove(m.addr);
    }
  }
}

img::Status PciBus::add_device(std::shared_ptr<PciDevice> dev) {
  if (!dev) return img::invalid_argument("PCI: null device");
  std::lock_guard lock(mu_);
  unsigned slot = 1;
  while (slot < kSlots && slots_[slot]) ++slot;
  if (slot == kSlots) return img::no_space("PCI bus 0 has no free slot");
  PciConfigSpace& cfg = dev->config_space();
  // Place every BAR first, then commit, so a failure leaves the window as it was.
  uint64_t next = next_mmio_;
  std::array<uint64_t, PciConfigSpace::kNumBars> addrs{};
  for (unsigned b = 0; b < PciConfigSpace::kNumBars; ++b) {
    uint64_t size = cfg.bar_size(b);
    if (size == 0) continue;
    uint64_t aligned;
    if (__builtin_add_overflow(next, size - 1, &aligned)) return img::no_space("PCI MMIO window");
    aligned &= ~(size - 1);
    uint64_t end;
    if (__builtin_add_overflow(aligned, size, &end) || end > mmio_end_) {
      return img::no_space(img::strfmt("PCI MMIO window full (BAR %u of 0x%llx bytes)", b,
                                       static_cast<unsigned long long>(size)));
    }
    addrs[b] = aligned;
    next = end;
  }
  next_mmio_ = next;
  slots_[slot] = dev;
  for (unsigned b = 0; b < PciConfigSpace::kNumBars; ++b) {
    if (cfg.bar_size(b) == 0) continue;
    cfg.set_bar_address(b, addrs[b]);
    maps_[slot][b].placed = addrs[b];
    dev->bar_placed(b, addrs[b]);
  }
  cfg.save_power_on_state();
  update_mappings(slot);
  return {};
}

std::shared_ptr<PciDevice> PciBus::device(unsigned slot) {
  std::lock_guard lock(mu_);
  return slot < kSlots ? slots_[slot] : nullptr;
}

void PciBus::update_mappings(unsigned slot) {
  auto& dev = slots_[slot];
  PciConfigSpace& cfg = dev->config_space();
  for (unsigned b = 0; b < PciConfigSpace::kNumBars; ++b) {
    uint64_t size = cfg.bar_size(b);
    if (size == 0) continue;
    Mapping& m = maps_[slot][b];
    uint64_t addr = cfg.bar_address(b);
    uint64_t end;
    bool valid = addr != 0 && !__builtin_add_overflow(addr, size, &end);
    bool want = cfg.memory_enabled() && valid;
    if (m.mapped && (!want || m.addr != addr)) {
      (void)mmio_.remove(m.addr);
      m.mapped = false;
    }
    if (want && !m.mapped) {
      auto s = mmio_.insert(addr, size, std::make_shared<BarWindow>(dev, b));
      if (!s) {
        std::fprintf(stderr, "pci: 00:%02x.0 BAR %u at 0x%llx not mapped: %s\n", slot, b,
                     static_cast<unsigned long long>(addr), s.error().to_string().c_str());
        continue;
      }
      m.mapped = true;
      m.addr = addr;
      if (m.placed != addr) {
        m.placed = addr;
        dev->bar_placed(b, addr);
      }
    }
  }
}

bool PciBus::decode_address(uint32_t* slot, uint32_t* reg) const {
  uint32_t a = config_address_;
  if (!(a & 0x80000000u)) return false;
  uint32_t bus = (a >> 16) & 0xff, dev = (a >> 11) & 0x1f, fn = (a >> 8) & 7;
  if (bus != 0 || fn != 0) return false;
  *slot = dev;
  *reg = a & 0xfc;
  return true;
}

void PciBus::config_read_locked(unsigned slot, uint32_t offset, std::span<uint8_t> data) {
  if (slot >= kSlots || !slots_[slot]) {
    std::memset(data.data(), 0xff, data.size());  // no device: all ones (master abort)
    return;
  }
  slots_[slot]->config_space().read(offset, data);
}

void PciBus::config_write_locked(unsigned slot, uint32_t offset, std::span<const uint8_t> data) {
  if (slot >= kSlots || !slots_[slot] || data.empty()) return;
  auto& dev = slots_[slot];
  dev->config_space().write(offset, data);
  dev->config_written(offset, static_cast<uint32_t>(data.size()));
  // A write to the command register or a BAR may map, unmap or move BARs.
  if (offset < PciConfigSpace::kBar0 + 24 && offset + data.size() > PciConfigSpace::kCommand) {
    update_mappings(slot);
  }
}

void PciBus::reset() {
  std::lock_guard lock(mu_);
  config_address_ = 0;
  for (unsigned slot = 0; slot < kSlots; ++slot) {
    if (!slots_[slot]) continue;
    slots_[slot]->config_space().reset();
    update_mappings(slot);
    slots_[slot]->reset_function();
  }
}

void PciBus::config_read(unsigned slot, uint32_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  config_read_locked(slot, offset, data);
}

void PciBus::config_write(unsigned slot, uint32_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  config_write_locked(slot, offset, data);
}

void PciBus::bus_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset < 4) {
    // CONFIG_ADDRESS is a dword register; narrower reads see its bytes.
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < 4 ? static_cast<uint8_t>(config_address_ >> (8 * (offset + i))) : 0xff;
    }
    return;
  }
  uint32_t slot, reg;
  if (offset + data.size() > kConfigPortLen || !decode_address(&slot, &reg)) {
    std::memset(data.data(), 0xff, data.size());
    return;
  }
  config_read_locked(slot, reg + static_cast<uint32_t>(offset - 4), data);
}

void PciBus::bus_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset < 4) {
    // Only a full dword write at 0xCF8 sets CONFIG_ADDRESS (byte writes there are other
    // chipset registers on real hardware).
    if (offset == 0 && data.size() == 4) std::memcpy(&config_address_, data.data(), 4);
    return;
  }
  uint32_t slot, reg;
  if (offset + data.size() > kConfigPortLen || !decode_address(&slot, &reg)) return;
  config_write_locked(slot, reg + static_cast<uint32_t>(offset - 4), data);
}

}  // namespace vmm
