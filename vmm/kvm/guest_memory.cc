#include "kvm/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

namespace vmm {

bool GuestMemory::discard(uint64_t gpa, uint64_t len) const {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (len == 0 || gpa % page != 0 || len % page != 0) return false;
  uint8_t* p = translate(gpa, len);
  // The region's host mapping is page-aligned (mmap), so p is too.
  if (!p || reinterpret_cast<uintptr_t>(p) % page != 0) return false;
  return ::madvise(p, len, MADV_DONTNEED) == 0;
}

}  // namespace vmm
