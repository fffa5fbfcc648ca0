#include "devices/bus.h"

namespace vmm {

img::Status Bus::insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
  if (len == 0 || base + len < base) return img::invalid_argument("bus range is empty or wraps");
  std::lock_guard lock(mu_);
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + len) {
    return img::invalid_argument(img::strfmt("bus range 0x%llx+0x%llx overlaps one at 0x%llx",
                                             (unsigned long long)base, (unsigned long long)len,
                                             (unsigned long long)next->first));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.len > base) {
      return img::invalid_argument(img::strfmt("bus range 0x%llx+0x%llx overlaps one at 0x%llx",
                                               (unsigned long long)base, (unsigned long long)len,
                                               (unsigned long long)prev->first));
    }
  }
  ranges_[base] = Range{len, std::move(dev)};
  return {};
}

img::Status Bus::remove(uint64_t base) {
  std::lock_guard lock(mu_);
  if (ranges_.erase(base) == 0) return img::invalid_argument("no bus range at that base");
  return {};
}

std::shared_ptr<BusDevice> Bus::find(uint64_t addr, uint64_t len, uint64_t* base) {
  std::lock_guard lock(mu_);
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t end = it->first + it->second.len;
  if (addr + len < addr || addr + len > end) return nullptr;
  *base = it->first;
  return it->second.dev;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) {
  uint64_t base;
  auto dev = find(addr, data.size(), &base);
  if (!dev) return false;
  dev->bus_read(addr - base, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) {
  uint64_t base;
  auto dev = find(addr, data.size(), &base);
  if (!dev) return false;
  dev->bus_write(addr - base, data);
  return true;
}

}  // namespace vmm
