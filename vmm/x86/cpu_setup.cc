#include "x86/cpu_setup.h"

#include <cstring>

#include "img/bytes.h"
#include "x86/layout.h"

namespace vmm {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;
constexpr uint64_t kPteP = 1, kPteRw = 2, kPtePs = 0x80;

constexpr uint16_t kCodeSel = 0x08, kDataSel = 0x10, kTssSel = 0x18;

struct Gdt {
  uint64_t e[4];
};

Gdt gdt_for(EntryMode mode) {
  if (mode == EntryMode::kLong64) {
    // code: G, L, P, DPL0, S, execute/read accessed; data: G, D/B, P, S, read/write accessed.
    return {{0, gdt_entry(0xa09b, 0, 0xfffff), gdt_entry(0xc093, 0, 0xfffff),
             gdt_entry(0x808b, 0, 0xfffff)}};
  }
  return {{0, gdt_entry(0xc09b, 0, 0xfffff), gdt_entry(0xc093, 0, 0xfffff),
           gdt_entry(0x008b, 0, 0x67)}};
}

}  // namespace

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t(base) & 0xff000000) << 32) | ((uint64_t(flags) & 0xf0ff) << 40) |
         ((uint64_t(limit) & 0xf0000) << 32) | ((uint64_t(base) & 0x00ffffff) << 16) |
         (uint64_t(limit) & 0xffff);
}

kvm_segment segment_from_gdt(uint64_t e, uint16_t selector) {
  kvm_segment s{};
  s.base = ((e >> 16) & 0xffffff) | (((e >> 56) & 0xff) << 24);
  uint32_t limit = (e & 0xffff) | (((e >> 48) & 0xf) << 16);
  s.g = (e >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = selector;
  s.type = (e >> 40) & 0xf;
  s.s = (e >> 44) & 1;
  s.dpl = (e >> 45) & 3;
  s.present = (e >> 47) & 1;
  s.avl = (e >> 52) & 1;
  s.l = (e >> 53) & 1;
  s.db = (e >> 54) & 1;
  s.unusable = s.present ? 0 : 1;
  return s;
}

img::Status write_boot_tables(const GuestMemory& mem, EntryMode mode) {
  Gdt g = gdt_for(mode);
  uint8_t buf[sizeof g.e];
  for (int i = 0; i < 4; ++i) img::store_le64(buf + 8 * i, g.e[i]);
  if (!mem.write(layout::kGdt, buf, sizeof buf) || !mem.write(layout::kIdt, "\0\0\0\0\0\0\0", 8)) {
    return img::invalid_argument("guest memory too small for the boot GDT");
  }
  if (mode != EntryMode::kLong64) return {};
  uint8_t* pml4 = mem.translate(layout::kPml4, 4096);
  uint8_t* pdpt = mem.translate(layout::kPdpt, 4096);
  uint8_t* pd = mem.translate(layout::kPd, 4 * 4096);
  if (!pml4 || !pdpt || !pd) return img::invalid_argument("guest memory too small for page tables");
  std::memset(pml4, 0, 4096);
  std::memset(pdpt, 0, 4096);
  img::store_le64(pml4, layout::kPdpt | kPteP | kPteRw);
  for (uint64_t i = 0; i < 4; ++i) {
    img::store_le64(pdpt + 8 * i, (layout::kPd + i * 4096) | kPteP | kPteRw);
  }
  for (uint64_t j = 0; j < 4 * 512; ++j) {
    img::store_le64(pd + 8 * j, (j << 21) | kPteP | kPteRw | kPtePs);
  }
  return {};
}

void apply_boot_sregs(EntryMode mode, kvm_sregs* s) {
  Gdt g = gdt_for(mode);
  kvm_segment code = segment_from_gdt(g.e[1], kCodeSel);
  kvm_segment data = segment_from_gdt(g.e[2], kDataSel);
  kvm_segment tss = segment_from_gdt(g.e[3], kTssSel);
  s->cs = code;
  s->ds = s->es = s->fs = s->gs = s->ss = data;
  s->tr = tss;
  s->gdt.base = layout::kGdt;
  s->gdt.limit = sizeof(g.e) - 1;
  s->idt.base = layout::kIdt;
  s->idt.limit = 0;
  if (mode == EntryMode::kLong64) {
    s->cr3 = layout::kPml4;
    s->cr4 |= kCr4Pae;
    s->cr0 |= kCr0Pe | kCr0Et | kCr0Pg;
    s->efer |= kEferLme | kEferLma;
  } else {
    s->cr0 = (s->cr0 | kCr0Pe | kCr0Et) & ~kCr0Pg;
    s->cr4 = 0;
    s->efer = 0;
  }
}

kvm_regs boot_regs(EntryMode mode, uint64_t entry, uint64_t boot_arg) {
  kvm_regs r{};
  r.rflags = 0x2;  // bit 1 is reserved and always set
  r.rip = entry;
  r.rsp = layout::kBootStack;
  r.rbp = layout::kBootStack;
  if (mode == EntryMode::kLong64) {
    r.rsi = boot_arg;
  } else {
    r.rbx = boot_arg;
  }
  return r;
}

}  // namespace vmm
