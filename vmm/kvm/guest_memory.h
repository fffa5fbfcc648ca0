// Guest physical memory: regions of host memory mapped at guest-physical addresses. Every
// translation is bounds-checked with overflow-safe arithmetic: guest addresses are hostile input.
//
// Thread-safety: the region list is fixed before the guest runs; translations are lock-free.
// The bytes themselves are shared with the guest, which may change them at any time: copy a
// guest structure before validating it (read_obj), never validate in place and then use it.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

namespace vmm {

class GuestMemory {
 public:
  // How discard() gives a region's pages back to the host.
  enum class Backing : uint8_t {
    kPrivate,  // private anonymous memory: MADV_DONTNEED drops the pages
    kShared,   // a shared file mapping (a hugetlbfs memfd): MADV_REMOVE punches the hole, so the
               // pages go back to the file system (the huge page pool), not just out of the map
  };
  struct Region {
    uint64_t gpa;  // guest-physical base
    uint64_t size;
    uint8_t* host;           // host mapping of the region
    uint64_t page_size = 0;  // the host pages behind it (2 MiB for hugetlb); 0: the base page
    Backing backing = Backing::kPrivate;
  };

  void add_region(uint64_t gpa, uint64_t size, uint8_t* host, uint64_t page_size = 0,
                  Backing backing = Backing::kPrivate) {
    regions_.push_back({gpa, size, host, page_size, backing});
  }
  const std::vector<Region>& regions() const { return regions_; }

  // Host pointer for [gpa, gpa+len) if it lies inside one region, else nullptr.
  uint8_t* translate(uint64_t gpa, uint64_t len) const {
    for (const Region& r : regions_) {
      if (gpa >= r.gpa && gpa - r.gpa <= r.size && len <= r.size - (gpa - r.gpa)) {
        return r.host + (gpa - r.gpa);
      }
    }
    return nullptr;
  }
  std::optional<std::span<uint8_t>> slice(uint64_t gpa, uint64_t len) const {
    uint8_t* p = translate(gpa, len);
    if (!p) return std::nullopt;
    return std::span<uint8_t>(p, len);
  }
  bool read(uint64_t gpa, void* dst, uint64_t len) const {
    uint8_t* p = translate(gpa, len);
    if (!p) return false;
    std::memcpy(dst, p, len);
    return true;
  }
  bool write(uint64_t gpa, const void* src, uint64_t len) const {
    uint8_t* p = translate(gpa, len);
    if (!p) return false;
    std::memcpy(p, src, len);
    return true;
  }
  // The size of the host pages behind gpa (the base page unless the region says otherwise), or
  // 0 if gpa is not in guest RAM. discard() works in whole pages of this size.
  uint64_t host_page_size(uint64_t gpa) const;
  // Gives the pages of [gpa, gpa+len) back to the host: they read as zeros afterwards and cost no
  // host memory until touched (MADV_DONTNEED, or MADV_REMOVE on a shared mapping). The range must
  // lie inside one region and be aligned to its host page size (a hugetlb region drops only whole
  // huge pages), so nothing outside guest RAM is ever dropped; false (and nothing done) otherwise,
  // or if the kernel refuses.
  bool discard(uint64_t gpa, uint64_t len) const;
  template <class T>
  std::optional<T> read_obj(uint64_t gpa) const {
    T v;
    if (!read(gpa, &v, sizeof v)) return std::nullopt;
    return v;
  }

 private:
  const Region* region_of(uint64_t gpa) const;  // the region holding gpa, or nullptr
  std::vector<Region> regions_;
};

}  // namespace vmm
