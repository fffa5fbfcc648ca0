// bzImage loading, Documentation/arch/x86/boot.rst ("The Real-Mode Kernel Header",
// "Loading The Rest of The Kernel", "64-bit Boot Protocol").
#include <cstring>

#include "img/bytes.h"
#include "x86/kernel_loader.h"
#include "x86/layout.h"

namespace vmm {
namespace {

uint16_t le16(std::span<const uint8_t> f, size_t off) { return uint16_t(f[off] | f[off + 1] << 8); }
uint32_t le32(std::span<const uint8_t> f, size_t off) { return img::load_le32(f.data() + off); }
uint64_t le64(std::span<const uint8_t> f, size_t off) { return img::load_le64(f.data() + off); }

constexpr size_t kHeaderMinEnd = 0x268;  // through init_size (protocol 2.10+)
constexpr size_t kHeaderMaxEnd = 0x2d0;  // e820_table starts here in boot_params
constexpr uint64_t kEntry64Offset = 0x200;

std::string mib(uint64_t bytes) { return img::strfmt("%llu MiB", (unsigned long long)(bytes >> 20)); }

}  // namespace

img::Result<SetupHeader> parse_setup_header(std::span<const uint8_t> f) {
  if (f.size() < 0x202 + 4 || f[0x1fe] != 0x55 || f[0x1ff] != 0xaa ||
      std::memcmp(f.data() + 0x202, "HdrS", 4) != 0) {
    return img::invalid_argument("not a bzImage: setup header magic missing");
  }
  // The version (0x206) and every field we read lie below kHeaderMinEnd: a file that ends
  // before it is cut short, whatever its jump byte says (vmm_kernel_loader_fuzz read the version
  // one byte past a 518-byte file).
  if (f.size() < kHeaderMinEnd) {
    return img::invalid_argument(
        img::strfmt("bzImage truncated inside its setup header (%zu bytes, the header needs 0x%zx)",
                    f.size(), kHeaderMinEnd));
  }
  SetupHeader h;
  h.header_end = 0x202 + size_t(f[0x201]);
  h.version = le16(f, 0x206);
  if (h.version < SetupHeader::kMinVersion) {
    return img::not_supported(img::strfmt(
        "bzImage boot protocol %u.%02u is too old: the 64-bit entry needs 2.12 or later",
        h.version >> 8, h.version & 0xff));
  }
  if (h.header_end < kHeaderMinEnd || h.header_end > kHeaderMaxEnd) {
    return img::invalid_argument(
        img::strfmt("bzImage setup header ends at 0x%zx, outside [0x%zx, 0x%zx]", h.header_end,
                    kHeaderMinEnd, kHeaderMaxEnd));
  }
  if (f.size() < h.header_end) return img::invalid_argument("bzImage truncated inside its setup header");
  h.setup_sects = f[0x1f1] == 0 ? 4 : f[0x1f1];
  h.setup_size = (size_t(h.setup_sects) + 1) * 512;
  h.loadflags = f[0x211];
  h.initrd_addr_max = le32(f, 0x22c);
  h.kernel_alignment = le32(f, 0x230);
  h.relocatable = f[0x234];
  h.xloadflags = le16(f, 0x236);
  h.cmdline_size = le32(f, 0x238);
  h.pref_address = le64(f, 0x258);
  h.init_size = le32(f, 0x260);
  if (!(h.loadflags & SetupHeader::kLoadedHigh)) {
    return img::not_supported("zImage (LOADED_HIGH clear) is not supported: use a bzImage");
  }
  if (!(h.xloadflags & SetupHeader::kXlfKernel64)) {
    return img::not_supported("bzImage has no 64-bit entry point (XLF_KERNEL_64 clear)");
  }
  if (h.setup_size >= f.size()) {
    return img::invalid_argument(img::strfmt(
        "bzImage truncated: setup_sects says %zu bytes of setup, the file has %zu", h.setup_size,
        f.size()));
  }
  if (h.relocatable && (h.kernel_alignment == 0 || (h.kernel_alignment & (h.kernel_alignment - 1)) ||
                        h.kernel_alignment > (1u << 30))) {
    return img::invalid_argument(
        img::strfmt("bzImage kernel_alignment 0x%x is not a power of two up to 1 GiB",
                    h.kernel_alignment));
  }
  return h;
}

img::Result<LoadedKernel> load_bzimage(std::span<const uint8_t> f, const GuestMemory& mem,
                                       uint64_t ram_low_end) {
  ASSIGN_OR_RETURN(SetupHeader h, parse_setup_header(f));
  std::span<const uint8_t> payload = f.subspan(h.setup_size);
  uint64_t load = h.relocatable ? img::align_up(layout::kKernelLoad, h.kernel_alignment)
                                : h.pref_address;
  if (load < layout::kHighMemStart) {
    return img::invalid_argument(img::strfmt(
        "bzImage is not relocatable and wants address 0x%llx below 1 MiB", (unsigned long long)load));
  }
  uint64_t need = std::max<uint64_t>(h.init_size, payload.size());
  if (load > ram_low_end || need > ram_low_end - load) {
    return img::invalid_argument(img::strfmt("kernel too big for %s of memory (needs %s at 0x%llx)",
                                             mib(ram_low_end).c_str(), mib(need + (1 << 20) - 1).c_str(),
                                             (unsigned long long)load));
  }
  if (!mem.write(load, payload.data(), payload.size())) {
    return img::invalid_argument("kernel load range is outside guest memory");
  }
  LoadedKernel k;
  k.mode = EntryMode::kLong64;
  k.bzimage = true;
  k.load_addr = load;
  k.entry = load + kEntry64Offset;
  k.end = load + need;
  k.hdr = h;
  k.setup_header_raw.assign(f.begin() + SetupHeader::kOffset, f.begin() + h.header_end);
  // cmdline_size excludes the terminating NUL (boot.rst, field cmdline_size).
  k.cmdline_max = h.cmdline_size;
  return k;
}

img::Result<uint64_t> place_initrd(uint64_t size, uint64_t kernel_end, uint64_t initrd_addr_max,
                                   uint64_t ram_low_end) {
  uint64_t top = ram_low_end;
  if (initrd_addr_max != 0 && initrd_addr_max < top - 1) top = initrd_addr_max + 1;
  if (size > top) {
    return img::invalid_argument(img::strfmt("initrd of %s does not fit below 0x%llx",
                                             mib(size).c_str(), (unsigned long long)top));
  }
  uint64_t addr = img::align_down(top - size, 4096);
  if (addr < img::align_up(kernel_end, 4096)) {
    return img::invalid_argument(img::strfmt(
        "initrd of %llu bytes does not fit between the kernel (ends 0x%llx) and 0x%llx: add memory",
        (unsigned long long)size, (unsigned long long)kernel_end, (unsigned long long)top));
  }
  return addr;
}

img::Result<LoadedKernel> load_kernel(std::span<const uint8_t> file, const GuestMemory& mem,
                                      uint64_t ram_low_end) {
  if (file.size() >= 4 && std::memcmp(file.data(), "\x7f" "ELF", 4) == 0) return load_elf(file, mem);
  return load_bzimage(file, mem, ram_low_end);
}

}  // namespace vmm
