#include "pci/pci_config.h"

#include <bit>
#include <cstring>

namespace vmm {

PciConfigSpace::PciConfigSpace(const PciIds& ids) {
  store16(kVendorId, ids.vendor);
  store16(kVendorId + 2, ids.device);
  bytes_[kRevision] = ids.revision;
  bytes_[0x09] = static_cast<uint8_t>(ids.class_code);
  bytes_[0x0a] = static_cast<uint8_t>(ids.class_code >> 8);
  bytes_[0x0b] = static_cast<uint8_t>(ids.class_code >> 16);
  bytes_[kHeaderType] = 0;  // type 0, single function
  store16(kSubsystemVendor, ids.subsystem_vendor);
  store16(kSubsystemVendor + 2, ids.subsystem);
  // Command: I/O space, memory space, bus master, SERR#, interrupt disable are writable.
  wmask_[kCommand] = 0x07;
  wmask_[kCommand + 1] = 0x05;
  wmask_[0x0c] = 0xff;  // cache line size
  wmask_[0x0d] = 0xff;  // latency timer
  wmask_[kInterruptLine] = 0xff;
}

uint16_t PciConfigSpace::load16(uint32_t offset) const {
  offset %= kSize;
  if (offset + 2 > kSize) return 0xffff;
  return static_cast<uint16_t>(bytes_[offset] | bytes_[offset + 1] << 8);
}
uint32_t PciConfigSpace::load32(uint32_t offset) const {
  offset %= kSize;
  if (offset + 4 > kSize) return 0xffffffff;
  uint32_t v;
  std::memcpy(&v, &bytes_[offset], 4);  // config space is little-endian, like the host
  return v;
}
void PciConfigSpace::store16(uint32_t offset, uint16_t v) {
  if (offset + 2 > kSize) return;
  bytes_[offset] = static_cast<uint8_t>(v);
  bytes_[offset + 1] = static_cast<uint8_t>(v >> 8);
}
void PciConfigSpace::store32(uint32_t offset, uint32_t v) {
  if (offset + 4 > kSize) return;
  std::memcpy(&bytes_[offset], &v, 4);
}

void PciConfigSpace::read(uint32_t offset, std::span<uint8_t> data) const {
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t o = uint64_t{offset} + i;
    data[i] = o < kSize ? bytes_[o] : 0xff;
  }
}

uint32_t PciConfigSpace::read32(uint32_t offset) const {
  uint32_t v;
  read(offset & ~3u, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
  return v;
}

void PciConfigSpace::write(uint32_t offset, std::span<const uint8_t> data) {
  if (offset >= kSize || data.size() > kSize - offset) return;
  if (is_bar_offset(offset)) {
    // BARs are written as whole dwords; merge a partial write into the current value first.
    unsigned index = (offset - kBar0) / 4;
    uint32_t base = kBar0 + index * 4;
    uint8_t reg[4];
    std::memcpy(reg, &bytes_[base], 4);
    for (size_t i = 0; i < data.size() && offset - base + i < 4; ++i)
      reg[offset - base + i] = data[i];
    uint32_t v;
    std::memcpy(&v, reg, 4);
    write_bar_dword(index, v);
    return;
  }
  for (size_t i = 0; i < data.size(); ++i) {
    uint32_t o = offset + static_cast<uint32_t>(i);
    bytes_[o] = static_cast<uint8_t>((bytes_[o] & ~wmask_[o]) | (data[i] & wmask_[o]));
  }
  memory_enabled_.store((command() & kCommandMemory) != 0, std::memory_order_release);
}

void PciConfigSpace::write_bar_dword(unsigned index, uint32_t value) {
  const Bar& bar = bars_[index];
  uint32_t reg = kBar0 + index * 4;
  if (bar.upper) {
    const Bar& low = bars_[index - 1];
    uint32_t mask = static_cast<uint32_t>(~(low.size - 1) >> 32);
    store32(reg, value & mask);
  } else if (bar.size != 0) {
    uint32_t mask = static_cast<uint32_t>(~(bar.size - 1)) & ~0xfu;
    store32(reg, (value & mask) | bar.flags);
  }
  // Unused BARs stay 0 (the sizing read of 0 tells the guest there is nothing).
}

img::Status PciConfigSpace::add_memory_bar(unsigned index, uint64_t size, bool is64,
                                           bool prefetchable) {
  if (index >= kNumBars || (is64 && index + 1 >= kNumBars)) {
    return img::invalid_argument(img::strfmt("BAR %u out of range", index));
  }
  if (size < 16 || !std::has_single_bit(size) || (!is64 && size > (1ull << 31))) {
    return img::invalid_argument(
        img::strfmt("BAR %u size 0x%llx invalid", index, static_cast<unsigned long long>(size)));
  }
  if (bars_[index].size || bars_[index].upper ||
      (is64 && (bars_[index + 1].size || bars_[index + 1].upper))) {
    return img::invalid_argument(img::strfmt("BAR %u already in use", index));
  }
  Bar& b = bars_[index];
  b.size = size;
  b.is64 = is64;
  b.flags = static_cast<uint8_t>((is64 ? 0x4 : 0x0) | (prefetchable ? 0x8 : 0x0));
  if (is64) bars_[index + 1].upper = true;
  store32(kBar0 + index * 4, b.flags);
  return {};
}

uint64_t PciConfigSpace::bar_address(unsigned index) const {
  if (index >= kNumBars || bars_[index].size == 0) return 0;
  uint64_t addr = load32(kBar0 + index * 4) & ~0xfull;
  if (bars_[index].is64) addr |= uint64_t{load32(kBar0 + (index + 1) * 4)} << 32;
  return addr;
}

void PciConfigSpace::reset() {
  bytes_ = power_on_;
  memory_enabled_.store((command() & kCommandMemory) != 0, std::memory_order_release);
}

void PciConfigSpace::set_bar_address(unsigned index, uint64_t addr) {
  if (index >= kNumBars || bars_[index].size == 0) return;
  write_bar_dword(index, static_cast<uint32_t>(addr));
  if (bars_[index].is64) write_bar_dword(index + 1, static_cast<uint32_t>(addr >> 32));
}

img::Result<uint8_t> PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body,
                                                    std::span<const uint8_t> writable_body) {
  uint32_t len = 2 + static_cast<uint32_t>(body.size());
  uint32_t at = (next_cap_ + 3) & ~3u;  // capabilities are dword aligned (§6.7)
  if (at + len > kSize) return img::no_space("PCI capability list is full");
  bytes_[at] = id;
  bytes_[at + 1] = 0;
  std::memcpy(&bytes_[at + 2], body.data(), body.size());
  for (size_t i = 0; i < writable_body.size() && i < body.size(); ++i) {
    wmask_[at + 2 + i] = writable_body[i];
  }
  if (last_cap_ == 0) {
    bytes_[kCapPointer] = static_cast<uint8_t>(at);
    store16(kStatus, static_cast<uint16_t>(load16(kStatus) | kStatusCapList));
  } else {
    bytes_[last_cap_ + 1] = static_cast<uint8_t>(at);
  }
  last_cap_ = static_cast<uint8_t>(at);
  next_cap_ = at + len;
  return static_cast<uint8_t>(at);
}

}  // namespace vmm
