#include "kvm/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

namespace vmm {

namespace {
uint64_t base_page() {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}
}  // namespace

const GuestMemory::Region* GuestMemory::region_of(uint64_t gpa) const {
  for (const Region& r : regions_) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return &r;
  }
  return nullptr;
}

uint64_t GuestMemory::host_page_size(uint64_t gpa) const {
  const Region* r = region_of(gpa);
  if (!r) return 0;
  return r->page_size ? r->page_size : base_page();
}

bool GuestMemory::discard(uint64_t gpa, uint64_t len) const {
  const Region* region = region_of(gpa);
  if (!region) return false;
  const uint64_t page = region->page_size ? region->page_size : base_page();
  if (len == 0 || (gpa - region->gpa) % page != 0 || len % page != 0) return false;
  uint8_t* p = translate(gpa, len);
  // The region's host mapping is aligned to its pages (mmap), so p is too.
  if (!p || reinterpret_cast<uintptr_t>(p) % page != 0) return false;
  int advice = region->backing == Backing::kShared ? MADV_REMOVE : MADV_DONTNEED;
  return ::madvise(p, len, advice) == 0;
}

}  // namespace vmm
