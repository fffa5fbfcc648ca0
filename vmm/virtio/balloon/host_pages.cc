#include "virtio/balloon/host_pages.h"

namespace vmm::virtio::balloon {

namespace {
constexpr uint64_t kSmall = 4096;
}

bool HostPages::inflate(uint64_t gpa, uint64_t host_page) {
  const uint64_t base = gpa & ~(host_page - 1);
  const uint64_t i = (gpa - base) / kSmall;
  Entry& e = pages_[base];
  if (e.total == 0) {
    e.total = static_cast<uint32_t>(host_page / kSmall);
    e.bits.assign((e.total + 63) / 64, 0);
  }
  uint64_t& word = e.bits[i / 64];
  const uint64_t bit = uint64_t{1} << (i % 64);
  if (word & bit) return false;  // already ballooned: nothing new
  word |= bit;
  if (e.count == 0) ++partial_;
  if (++e.count < e.total) return false;
  --partial_;
  return true;
}

void HostPages::deflate(uint64_t gpa, uint64_t host_page) {
  const uint64_t base = gpa & ~(host_page - 1);
  auto it = pages_.find(base);
  if (it == pages_.end()) return;
  Entry& e = it->second;
  const uint64_t i = (gpa - base) / kSmall;
  uint64_t& word = e.bits[i / 64];
  const uint64_t bit = uint64_t{1} << (i % 64);
  if (!(word & bit)) return;
  word &= ~bit;
  if (e.count == e.total) ++partial_;
  if (--e.count == 0) {
    --partial_;
    pages_.erase(it);
  }
}

}  // namespace vmm::virtio::balloon
