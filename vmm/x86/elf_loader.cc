// ELF64 loading (System V gABI "Program Header", x86-64 psABI) with the Xen PVH entry note
// (xen/include/public/elfnote.h: XEN_ELFNOTE_PHYS32_ENTRY = 18, name "Xen").
#include <cstring>

#include "img/bytes.h"
#include "x86/kernel_loader.h"

namespace vmm {
namespace {

constexpr size_t kEhdrSize = 64;
constexpr size_t kPhdrSize = 56;
constexpr uint32_t kPtLoad = 1, kPtNote = 4;
constexpr uint32_t kXenElfnotePhys32Entry = 18;

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }

struct Phdr {
  uint32_t type;
  uint64_t offset, paddr, filesz, memsz;
};

// Finds the PVH entry in one PT_NOTE segment's bytes.
std::optional<uint64_t> find_pvh_entry(std::span<const uint8_t> notes) {
  size_t pos = 0;
  while (notes.size() - pos >= 12) {
    uint32_t namesz = img::load_le32(&notes[pos]);
    uint32_t descsz = img::load_le32(&notes[pos + 4]);
    uint32_t type = img::load_le32(&notes[pos + 8]);
    pos += 12;
    uint64_t name_len = img::align_up(namesz, 4), desc_len = img::align_up(descsz, 4);
    if (name_len > notes.size() - pos || desc_len > notes.size() - pos - name_len) break;
    // Pointers, not &notes[i]: a note with empty name and descriptor at the very end leaves
    // pos == size(), where span's operator[] is undefined (a _GLIBCXX_ASSERTIONS abort).
    const uint8_t* name = notes.data() + pos;
    const uint8_t* desc = name + name_len;
    if (type == kXenElfnotePhys32Entry && namesz == 4 && std::memcmp(name, "Xen", 4) == 0) {
      if (descsz == 4) return img::load_le32(desc);
      if (descsz == 8) return img::load_le64(desc);
    }
    pos += name_len + desc_len;
  }
  return std::nullopt;
}

}  // namespace

img::Result<LoadedKernel> load_elf(std::span<const uint8_t> f, const GuestMemory& mem) {
  if (f.size() < kEhdrSize || std::memcmp(f.data(), "\x7f" "ELF", 4) != 0) {
    return img::invalid_argument("not an ELF file: header truncated or magic missing");
  }
  if (f[4] != 2 || f[5] != 1) return img::not_supported("ELF kernel is not 64-bit little-endian");
  if (le16(&f[16]) != 2) return img::not_supported("ELF kernel is not an executable (e_type)");
  if (le16(&f[18]) != 62) return img::not_supported("ELF kernel is not for x86-64 (e_machine)");
  uint64_t entry = img::load_le64(&f[24]);
  uint64_t phoff = img::load_le64(&f[32]);
  uint16_t phentsize = le16(&f[54]);
  uint16_t phnum = le16(&f[56]);
  if (phentsize != kPhdrSize) return img::invalid_argument("ELF e_phentsize is not 56");
  if (phnum == 0) return img::invalid_argument("ELF has no program headers");
  if (phoff > f.size() || uint64_t(phnum) * kPhdrSize > f.size() - phoff) {
    return img::invalid_argument("ELF program headers lie outside the file");
  }
  std::vector<Phdr> ph;
  for (uint16_t i = 0; i < phnum; ++i) {
    const uint8_t* p = &f[phoff + size_t(i) * kPhdrSize];
    Phdr h{img::load_le32(p), img::load_le64(p + 8), img::load_le64(p + 24), img::load_le64(p + 32),
           img::load_le64(p + 40)};
    if (h.type != kPtLoad && h.type != kPtNote) continue;
    if (h.offset > f.size() || h.filesz > f.size() - h.offset) {
      return img::invalid_argument(img::strfmt("ELF segment %u: file range lies outside the file", i));
    }
    if (h.type == kPtLoad && h.filesz > h.memsz) {
      return img::invalid_argument(img::strfmt("ELF segment %u: p_filesz > p_memsz", i));
    }
    ph.push_back(h);
  }
  LoadedKernel k;
  k.load_addr = UINT64_MAX;
  bool any_load = false;
  for (size_t i = 0; i < ph.size(); ++i) {
    const Phdr& h = ph[i];
    if (h.type == kPtNote) {
      if (auto e = find_pvh_entry(f.subspan(h.offset, h.filesz))) {
        k.pvh = true;
        entry = *e;
      }
      continue;
    }
    if (h.memsz == 0) continue;
    uint8_t* dst = mem.translate(h.paddr, h.memsz);
    if (!dst) {
      return img::invalid_argument(img::strfmt(
          "ELF segment at 0x%llx + 0x%llx is outside guest memory", (unsigned long long)h.paddr,
          (unsigned long long)h.memsz));
    }
    std::memcpy(dst, f.data() + h.offset, h.filesz);
    std::memset(dst + h.filesz, 0, h.memsz - h.filesz);
    any_load = true;
    k.load_addr = std::min(k.load_addr, h.paddr);
    k.end = std::max(k.end, h.paddr + h.memsz);
  }
  if (!any_load) return img::invalid_argument("ELF has no loadable segment");
  if (!mem.translate(entry, 1)) {
    return img::invalid_argument(
        img::strfmt("ELF entry point 0x%llx is outside guest memory", (unsigned long long)entry));
  }
  k.entry = entry;
  k.mode = k.pvh ? EntryMode::kProtected32 : EntryMode::kLong64;
  if (k.pvh && entry > UINT32_MAX) return img::invalid_argument("PVH entry point above 4 GiB");
  k.cmdline_max = 4095;
  return k;
}

}  // namespace vmm
