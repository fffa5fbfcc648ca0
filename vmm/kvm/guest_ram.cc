#include "kvm/guest_ram.h"

#include <linux/memfd.h>  // MFD_HUGE_2MB
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace vmm {

namespace {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Backs every page of [p, p+size) with host memory, as a guest write would.
img::Status populate(uint8_t* p, uint64_t size, bool hugepages) {
  if (::madvise(p, size, MADV_POPULATE_WRITE) == 0) return {};
  int e = errno;
  if (e == EINVAL && !hugepages) {
    // A kernel before 5.14: touch each page. Anonymous memory has no SIGBUS to fear; a host out
    // of memory answers with the OOM killer, as it would at the guest's first touch.
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    for (uint64_t o = 0; o < size; o += page) static_cast<volatile uint8_t*>(p)[o] = 0;
    return {};
  }
  if (hugepages) {
    return img::make_error(
        img::ErrorCode::kNoSpace,
        // The kernel says EFAULT (or ENOMEM) when the pool runs dry: name the cause instead.
        img::strfmt("--mem-prealloc: not enough free 2 MiB huge pages for %llu MiB: reserve "
                    "them first, e.g. echo %llu > /proc/sys/vm/nr_hugepages",
                    (unsigned long long)(size >> 20), (unsigned long long)(size >> 21)),
        e);
  }
  return img::make_error(img::ErrorCode::kNoSpace,
                         img::strfmt("--mem-prealloc: cannot back %llu MiB of guest memory (%s)",
                                     (unsigned long long)(size >> 20), std::strerror(e)),
                         e);
}

}  // namespace

img::Result<GuestRam> GuestRam::create(uint64_t size, bool hugepages, bool prealloc) {
  constexpr uint64_t k2MiB = 2ull << 20;
  if (size == 0 || size % 4096 != 0) {
    return img::invalid_argument("memory size must be a non-zero multiple of 4 KiB");
  }
  if (hugepages && size % k2MiB != 0) {
    return img::invalid_argument("--hugepages needs a memory size that is a multiple of 2 MiB");
  }
  void* p = MAP_FAILED;
  if (hugepages) {
    // A hugetlbfs memfd mapped shared, as QEMU's memory-backend-memfd,hugetlb=on: mmap reserves
    // the huge pages now (so a short pool is this error, not a SIGBUS at the guest's first
    // touch), and the balloon's MADV_REMOVE punches whole pages out of the file, which gives them
    // back to the pool. The memfd itself is closed at once; the mapping keeps the file.
    int fd =
        static_cast<int>(::memfd_create("vmm-guest-ram", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB));
    int e = errno;
    if (fd >= 0) {
      if (::ftruncate(fd, static_cast<off_t>(size)) == 0) {
        p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      }
      e = errno;
      ::close(fd);
    }
    if (p == MAP_FAILED) {
      return img::make_error(
          img::ErrorCode::kNoSpace,
          img::strfmt("cannot map %llu MiB of 2 MiB huge pages (%s): reserve them first, e.g. "
                      "echo %llu > /proc/sys/vm/nr_hugepages",
                      (unsigned long long)(size >> 20), std::strerror(e),
                      (unsigned long long)(size / k2MiB)),
          e);
    }
  } else {
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0);
    if (p == MAP_FAILED) {
      return img::io_error(
          errno, img::strfmt("mapping %llu MiB of guest memory", (unsigned long long)(size >> 20)));
    }
  }
  GuestRam ram;
  ram.base_ = static_cast<uint8_t*>(p);
  ram.size_ = size;
  ram.hugepages_ = hugepages;
  ram.prealloc_ = prealloc;
  if (prealloc) RETURN_IF_ERROR(populate(ram.base_, size, hugepages));
  uint64_t low = size < kPciHoleStart ? size : kPciHoleStart;
  const uint64_t page = hugepages ? k2MiB : 0;
  const auto backing = hugepages ? GuestMemory::Backing::kShared : GuestMemory::Backing::kPrivate;
  ram.mem_.add_region(0, low, ram.base_, page, backing);
  if (size > low) ram.mem_.add_region(k4GiB, size - low, ram.base_ + low, page, backing);
  return ram;
}

img::Status GuestRam::clear() {
  if (::madvise(base_, size_, hugepages_ ? MADV_REMOVE : MADV_DONTNEED) != 0) {
    int e = errno;
    // No way to drop the pages: write the zeros (they are backed already).
    std::fprintf(stderr, "vmm: reset: madvise of guest memory: %s; zeroing it instead\n",
                 std::strerror(e));
    std::memset(base_, 0, size_);
    return {};
  }
  if (prealloc_ || hugepages_) return populate(base_, size_, hugepages_);
  return {};
}

GuestRam::GuestRam(GuestRam&& o) noexcept
    : base_(o.base_),
      size_(o.size_),
      hugepages_(o.hugepages_),
      prealloc_(o.prealloc_),
      mem_(o.mem_) {
  o.base_ = nullptr;
  o.size_ = 0;
}

GuestRam::~GuestRam() {
  if (base_) ::munmap(base_, size_);
}

}  // namespace vmm
