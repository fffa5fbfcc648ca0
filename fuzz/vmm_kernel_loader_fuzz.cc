// libFuzzer target: the VMM's kernel loaders (vmm/x86/bzimage.cc, elf_loader.cc) on a hostile
// kernel file. The input is the file; it is loaded into a guest RAM of kRam bytes (a region at
// guest-physical 0, as the machine lays out low RAM), then an initrd is placed above it.
// Properties checked (a violation is a crash; ASan sees any write outside guest memory):
//   - a loaded kernel lies inside guest memory: [load_addr, end) and the entry point translate;
//   - a bzImage's load address is at or above 1 MiB and its command line limit is what the
//     header says; a PVH entry is below 4 GiB;
//   - place_initrd returns a 4 KiB-aligned range above the kernel and below RAM's end.
// Seeds: testdata/fuzz/vmm_kernel_loader (the freestanding test guest ELF, headers of real
// bzImage and vmlinux files cut to their first pages).
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "img/bytes.h"
#include "x86/kernel_loader.h"
#include "x86/layout.h"

namespace {

// Enough for a relocatable bzImage at 16 MiB (layout::kKernelLoad) with room above it.
constexpr uint64_t kRam = 24ull << 20;

uint8_t* ram() {
  // Mapped once: pages a run touches stay, the rest costs nothing (MAP_NORESERVE).
  static uint8_t* p = [] {
    void* m = mmap(nullptr, kRam, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) std::abort();
    return static_cast<uint8_t*>(m);
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (4u << 20)) return 0;
  vmm::GuestMemory mem;
  mem.add_region(0, kRam, ram());
  auto k = vmm::load_kernel(std::span<const uint8_t>(data, size), mem, kRam);
  if (!k) return 0;
  // One RAM region: everything between the lowest and the highest loaded byte is inside it.
  if (k->end < k->load_addr || !mem.translate(k->load_addr, k->end - k->load_addr)) {
    __builtin_trap();
  }
  if (!mem.translate(k->entry, 1)) __builtin_trap();
  if (k->bzimage) {
    if (k->load_addr < vmm::layout::kHighMemStart || k->end > kRam) __builtin_trap();
    if (k->cmdline_max != k->hdr.cmdline_size) __builtin_trap();
    if (k->setup_header_raw.size() != k->hdr.header_end - vmm::SetupHeader::kOffset)
      __builtin_trap();
  }
  if (k->pvh && k->entry > UINT32_MAX) __builtin_trap();
  // An initrd of a size taken from the file's last bytes.
  uint64_t initrd = size >= 8 ? img::load_le64(data + size - 8) : size;
  uint64_t max = k->bzimage ? k->hdr.initrd_addr_max : 0;
  if (auto at = vmm::place_initrd(initrd, k->end, max, kRam)) {
    if (*at % 4096 || *at < k->end || *at > kRam || initrd > kRam - *at) __builtin_trap();
  }
  return 0;
}
