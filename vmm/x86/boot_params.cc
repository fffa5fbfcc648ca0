#include "x86/boot_params.h"

#include <cstring>

#include "img/bytes.h"
#include "x86/layout.h"

namespace vmm {
namespace {

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

}  // namespace

img::Status check_cmdline(const std::string& cmdline, uint32_t max_len) {
  if (cmdline.find('\0') != std::string::npos) return img::invalid_argument("command line holds a NUL");
  uint64_t limit = std::min<uint64_t>(max_len, layout::kCmdlineMax - 1);
  if (cmdline.size() > limit) {
    return img::invalid_argument(img::strfmt("command line too long: %zu bytes, the kernel accepts at most %llu",
                                             cmdline.size(), (unsigned long long)limit));
  }
  return {};
}

img::Result<std::array<uint8_t, zp::kSize>> build_zero_page(const LoadedKernel& k,
                                                            const BootInfo& info,
                                                            uint64_t cmdline_addr) {
  std::array<uint8_t, zp::kSize> z{};
  if (k.bzimage) {
    // boot.rst: copy the setup header from the kernel file, then fill in the loader fields.
    std::memcpy(z.data() + SetupHeader::kOffset, k.setup_header_raw.data(),
                k.setup_header_raw.size());
  } else {
    // A minimal header for non-bzImage kernels that still read boot_params (magic and version).
    put16(z.data() + 0x1fe, 0xaa55);
    std::memcpy(z.data() + 0x202, "HdrS", 4);
    put16(z.data() + 0x206, SetupHeader::kMinVersion);
  }
  z[zp::kTypeOfLoader] = 0xff;  // undefined boot loader
  img::store_le32(z.data() + zp::kCmdLinePtr, static_cast<uint32_t>(cmdline_addr));
  img::store_le32(z.data() + zp::kExtCmdLinePtr, static_cast<uint32_t>(cmdline_addr >> 32));
  img::store_le32(z.data() + zp::kRamdiskImage, static_cast<uint32_t>(info.initrd_addr));
  img::store_le32(z.data() + zp::kExtRamdiskImage, static_cast<uint32_t>(info.initrd_addr >> 32));
  img::store_le32(z.data() + zp::kRamdiskSize, static_cast<uint32_t>(info.initrd_size));
  img::store_le32(z.data() + zp::kExtRamdiskSize, static_cast<uint32_t>(info.initrd_size >> 32));
  img::store_le64(z.data() + zp::kAcpiRsdpAddr, info.rsdp_addr);
  if (info.e820.size() > zp::kE820Max) return img::invalid_argument("too many e820 entries");
  z[zp::kE820Entries] = static_cast<uint8_t>(info.e820.size());
  for (size_t i = 0; i < info.e820.size(); ++i) {
    uint8_t* e = z.data() + zp::kE820Table + 20 * i;  // struct boot_e820_entry, packed
    img::store_le64(e, info.e820[i].addr);
    img::store_le64(e + 8, info.e820[i].size);
    img::store_le32(e + 16, info.e820[i].type);
  }
  return z;
}

std::vector<uint8_t> build_pvh_start_info(const BootInfo& info, uint64_t at, uint64_t cmdline_addr) {
  constexpr size_t kStartInfoSize = 56, kModSize = 32, kMemmapEntrySize = 24;
  constexpr uint32_t kMagic = 0x336ec578;  // XEN_HVM_START_MAGIC_VALUE
  bool has_mod = info.initrd_size != 0;
  size_t mod_off = kStartInfoSize;
  size_t map_off = mod_off + (has_mod ? kModSize : 0);
  std::vector<uint8_t> b(map_off + kMemmapEntrySize * info.e820.size());
  uint8_t* p = b.data();
  img::store_le32(p + 0, kMagic);
  img::store_le32(p + 4, 1);  // version 1: memmap fields valid
  img::store_le32(p + 8, 0);  // flags
  img::store_le32(p + 12, has_mod ? 1 : 0);
  img::store_le64(p + 16, has_mod ? at + mod_off : 0);  // modlist_paddr
  img::store_le64(p + 24, cmdline_addr);
  img::store_le64(p + 32, info.rsdp_addr);
  img::store_le64(p + 40, at + map_off);  // memmap_paddr
  img::store_le32(p + 48, static_cast<uint32_t>(info.e820.size()));
  if (has_mod) {
    img::store_le64(p + mod_off, info.initrd_addr);
    img::store_le64(p + mod_off + 8, info.initrd_size);
  }
  for (size_t i = 0; i < info.e820.size(); ++i) {
    uint8_t* e = p + map_off + kMemmapEntrySize * i;
    img::store_le64(e, info.e820[i].addr);
    img::store_le64(e + 8, info.e820[i].size);
    img::store_le32(e + 16, info.e820[i].type);  // same type numbers as e820
  }
  return b;
}

img::Result<uint64_t> write_boot_info(const GuestMemory& mem, const LoadedKernel& k,
                                      const BootInfo& info) {
  RETURN_IF_ERROR(check_cmdline(info.cmdline, k.cmdline_max));
  if (!mem.write(layout::kCmdline, info.cmdline.c_str(), info.cmdline.size() + 1)) {
    return img::invalid_argument("guest memory too small for the command line");
  }
  if (k.pvh) {
    std::vector<uint8_t> si = build_pvh_start_info(info, layout::kPvhStartInfo, layout::kCmdline);
    if (si.size() > layout::kZeroPage - layout::kPvhStartInfo ||
        !mem.write(layout::kPvhStartInfo, si.data(), si.size())) {
      return img::invalid_argument("PVH start info does not fit");
    }
    return layout::kPvhStartInfo;
  }
  ASSIGN_OR_RETURN(auto z, build_zero_page(k, info, layout::kCmdline));
  if (!mem.write(layout::kZeroPage, z.data(), z.size())) {
    return img::invalid_argument("guest memory too small for the zero page");
  }
  return layout::kZeroPage;
}

}  // namespace vmm
