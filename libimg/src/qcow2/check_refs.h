// RefCounts: the checker's in-memory reference counts per host cluster, sized by the clusters
// that metadata references, not by the file length (a sparse 15 TiB file with a few MiB of
// metadata costs a few pages). Clusters are grouped in pages of 2^15; a page is allocated when
// its first cluster is referenced and starts as one bit per cluster (almost every cluster is
// referenced once); the second reference to any cluster of a page turns the page into 16-bit
// counts. Counts from 0xffff up (only with refcount_bits > 16) live in an overflow map.
// QEMU keeps refcount_bits per cluster of the file (qcow2-refcount.c, the "IMRT"); for a 1 TiB
// image with 64 KiB clusters that is 32 MiB, against 2 MiB here.
//
// Thread-safety: none; one Checker.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace img::qcow2 {

class RefCounts {
 public:
  static constexpr uint32_t kPageBits = 15;
  static constexpr uint64_t kPageClusters = 1ull << kPageBits;

  // max: the largest count the image's refcount width holds (refcount_max).
  explicit RefCounts(uint64_t max) : max_(max) {}

  // Adds one reference to cluster c. False (count unchanged) if it is already at max.
  bool inc(uint64_t c) {
    Page& p = page(c);
    const uint64_t i = c & (kPageClusters - 1);
    if (p.counts.empty()) {
      uint64_t& w = p.bits[i / 64];
      const uint64_t bit = 1ull << (i % 64);
      if (!(w & bit)) {
        if (max_ == 0) return false;
        w |= bit;
        return true;
      }
      widen(p);
    }
    const uint64_t v = get_in(p, c, i);
    if (v >= max_) return false;
    put_in(p, c, i, v + 1);
    return true;
  }

  uint64_t get(uint64_t c) const {
    const uint64_t pi = c >> kPageBits;
    if (pi >= pages_.size() || !pages_[pi]) return 0;
    return get_in(*pages_[pi], c, c & (kPageClusters - 1));
  }

  void set(uint64_t c, uint64_t v) {
    if (v == 0 && get(c) == 0) return;
    Page& p = page(c);
    const uint64_t i = c & (kPageClusters - 1);
    if (p.counts.empty() && v > 1) widen(p);
    put_in(p, c, i, v);
  }

  // True if no cluster of page pi has a count (the page was never allocated).
  bool page_empty(uint64_t pi) const { return pi >= pages_.size() || !pages_[pi]; }
  uint64_t pages() const { return pages_.size(); }

  // One past the highest cluster with a count > 0; 0 if there is none.
  uint64_t end() const {
    for (uint64_t pi = pages_.size(); pi-- > 0;) {
      if (!pages_[pi]) continue;
      for (uint64_t i = kPageClusters; i-- > 0;) {
        if (get_in(*pages_[pi], (pi << kPageBits) + i, i)) return (pi << kPageBits) + i + 1;
      }
    }
    return 0;
  }

 private:
  struct Page {
    std::vector<uint64_t> bits;    // one bit per cluster, until a count exceeds 1
    std::vector<uint16_t> counts;  // then one count per cluster; 0xffff: see wide_
  };
  static constexpr uint16_t kWide = 0xffff;

  Page& page(uint64_t c) {
    const uint64_t pi = c >> kPageBits;
    if (pi >= pages_.size()) pages_.resize(pi + 1);
    if (!pages_[pi]) {
      pages_[pi] = std::make_unique<Page>();
      pages_[pi]->bits.assign(kPageClusters / 64, 0);
    }
    return *pages_[pi];
  }
  static void widen(Page& p) {
    p.counts.assign(kPageClusters, 0);
    for (uint64_t i = 0; i < kPageClusters; ++i) p.counts[i] = (p.bits[i / 64] >> (i % 64)) & 1;
    std::vector<uint64_t>().swap(p.bits);
  }
  uint64_t get_in(const Page& p, uint64_t c, uint64_t i) const {
    if (p.counts.empty()) return (p.bits[i / 64] >> (i % 64)) & 1;
    if (p.counts[i] != kWide) return p.counts[i];
    return wide_.at(c);
  }
  void put_in(Page& p, uint64_t c, uint64_t i, uint64_t v) {
    if (p.counts.empty()) {  // v <= 1
      uint64_t bit = 1ull << (i % 64);
      p.bits[i / 64] = v ? (p.bits[i / 64] | bit) : (p.bits[i / 64] & ~bit);
      return;
    }
    if (p.counts[i] == kWide && v < kWide) wide_.erase(c);
    if (v >= kWide) {
      p.counts[i] = kWide;
      wide_[c] = v;
    } else {
      p.counts[i] = static_cast<uint16_t>(v);
    }
  }

  uint64_t max_;
  std::vector<std::unique_ptr<Page>> pages_;
  std::unordered_map<uint64_t, uint64_t> wide_;
};

}  // namespace img::qcow2
