// The bzImage setup-header parser, the ELF/PVH loader, cmdline and initrd placement, and the zero
// page, fed crafted (mostly hostile) files.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "img/bytes.h"
#include "x86/boot_params.h"
#include "x86/kernel_loader.h"
#include "x86/layout.h"

namespace vmm {
namespace {

constexpr uint64_t kMem = 64ull << 20;

struct FakeRam {
  std::vector<uint8_t> buf = std::vector<uint8_t>(kMem);
  GuestMemory mem;
  FakeRam() { mem.add_region(0, buf.size(), buf.data()); }
};

void put16(std::vector<uint8_t>& f, size_t off, uint16_t v) { std::memcpy(&f[off], &v, 2); }
void put32(std::vector<uint8_t>& f, size_t off, uint32_t v) { std::memcpy(&f[off], &v, 4); }

// A minimal valid bzImage: 4 setup sectors + a payload, protocol 2.15, relocatable, 64-bit.
std::vector<uint8_t> make_bzimage(size_t payload = 8192, uint32_t init_size = 1 << 20) {
  std::vector<uint8_t> f(5 * 512 + payload, 0);
  f[0x1f1] = 4;
  put16(f, 0x1fe, 0xaa55);
  f[0x201] = 0x66;  // jump offset: header ends at 0x202 + 0x66 = 0x268
  std::memcpy(&f[0x202], "HdrS", 4);
  put16(f, 0x206, 0x020f);
  f[0x211] = 0x01;  // LOADED_HIGH
  put32(f, 0x22c, 0x7fffffff);
  put32(f, 0x230, 0x200000);
  f[0x234] = 1;
  put16(f, 0x236, 0x1);  // XLF_KERNEL_64
  put32(f, 0x238, 2047);
  put32(f, 0x260, init_size);
  for (size_t i = 0; i < payload; ++i) f[5 * 512 + i] = static_cast<uint8_t>(i * 7);
  return f;
}

TEST(BzImageTest, ParsesValidHeader) {
  auto h = parse_setup_header(make_bzimage());
  ASSERT_TRUE(h) << h.error().to_string();
  EXPECT_EQ(h->version, 0x020f);
  EXPECT_EQ(h->setup_size, 5u * 512);
  EXPECT_EQ(h->cmdline_size, 2047u);
  EXPECT_EQ(h->header_end, 0x268u);
}

TEST(BzImageTest, LoadsAtAlignedAddressAndEntersAt0x200) {
  FakeRam ram;
  auto f = make_bzimage();
  auto k = load_bzimage(f, ram.mem, kMem);
  ASSERT_TRUE(k) << k.error().to_string();
  EXPECT_EQ(k->load_addr, layout::kKernelLoad);
  EXPECT_EQ(k->entry, layout::kKernelLoad + 0x200);
  EXPECT_EQ(k->end, layout::kKernelLoad + (1 << 20));
  EXPECT_EQ(0, std::memcmp(&ram.buf[layout::kKernelLoad], &f[5 * 512], 8192));
}

TEST(BzImageTest, RejectsMissingMagic) {
  auto f = make_bzimage();
  f[0x202] = 'X';
  auto h = parse_setup_header(f);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().message(), "not a bzImage: setup header magic missing");
  EXPECT_FALSE(parse_setup_header(std::vector<uint8_t>(100)));
}

TEST(BzImageTest, RejectsTruncatedFiles) {
  auto f = make_bzimage();
  for (size_t n : {size_t(0), size_t(0x1f0), size_t(0x205), size_t(0x240), size_t(5 * 512)}) {
    std::vector<uint8_t> t(f.begin(), f.begin() + n);
    EXPECT_FALSE(parse_setup_header(t)) << n;
  }
}

// Regression (vmm_kernel_loader_fuzz, heap-buffer-overflow): a file of 0x206..0x267 bytes with
// the magic passed the first check, and the version at 0x206 was read past its end. The bytes
// past the view here say "protocol 1.00", so the old code reported "too old" from them.
TEST(BzImageTest, FileEndingRightAfterTheMagicIsTruncatedNotReadPast) {
  auto f = make_bzimage();
  put16(f, 0x206, 0x0100);
  for (size_t n : {size_t(0x206), size_t(0x207), size_t(0x267)}) {
    auto h = parse_setup_header(std::span<const uint8_t>(f.data(), n));
    ASSERT_FALSE(h) << n;
    EXPECT_NE(h.error().message().find("truncated inside its setup header"), std::string::npos)
        << n << ": " << h.error().message();
  }
}

TEST(BzImageTest, RejectsOldProtocolAnd32BitOnly) {
  auto f = make_bzimage();
  put16(f, 0x206, 0x0206);
  EXPECT_NE(parse_setup_header(f).error().message().find("too old"), std::string::npos);
  f = make_bzimage();
  put16(f, 0x236, 0);
  EXPECT_NE(parse_setup_header(f).error().message().find("XLF_KERNEL_64"), std::string::npos);
  f = make_bzimage();
  f[0x211] = 0;
  EXPECT_FALSE(parse_setup_header(f));
}

TEST(BzImageTest, RejectsHostileHeaderFields) {
  auto f = make_bzimage();
  f[0x201] = 0xff;  // header would run into the e820 table
  EXPECT_FALSE(parse_setup_header(f));
  f = make_bzimage();
  put32(f, 0x230, 0x300000);  // alignment not a power of two
  EXPECT_FALSE(parse_setup_header(f));
  f = make_bzimage();
  f[0x1f1] = 200;  // setup longer than the file
  EXPECT_FALSE(parse_setup_header(f));
}

TEST(BzImageTest, KernelTooBigForMemory) {
  FakeRam ram;
  auto f = make_bzimage(8192, 0xf0000000u);
  auto k = load_bzimage(f, ram.mem, kMem);
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message().find("kernel too big for 64 MiB of memory"), std::string::npos)
      << k.error().message();
}

// ELF64 with one PT_LOAD (and optionally a PT_NOTE with the PVH entry).
std::vector<uint8_t> make_elf(uint64_t paddr, uint64_t memsz, bool pvh, uint64_t entry) {
  std::vector<uint8_t> f(0x1000, 0);
  std::memcpy(&f[0], "\x7f" "ELF", 4);
  f[4] = 2;
  f[5] = 1;
  f[6] = 1;
  put16(f, 16, 2);
  put16(f, 18, 62);
  img::store_le64(&f[24], entry);
  img::store_le64(&f[32], 64);
  put16(f, 54, 56);
  put16(f, 56, pvh ? 2 : 1);
  uint8_t* p = &f[64];
  img::store_le32(p, 1);
  img::store_le64(p + 8, 0x800);   // offset
  img::store_le64(p + 24, paddr);  // paddr
  img::store_le64(p + 32, 0x100);  // filesz
  img::store_le64(p + 40, memsz);
  for (int i = 0; i < 0x100; ++i) f[0x800 + i] = 0xcc;
  if (pvh) {
    uint8_t* n = &f[64 + 56];
    img::store_le32(n, 4);
    img::store_le64(n + 8, 0x900);
    img::store_le64(n + 32, 20);
    img::store_le32(&f[0x900], 4);   // namesz
    img::store_le32(&f[0x904], 4);   // descsz
    img::store_le32(&f[0x908], 18);  // XEN_ELFNOTE_PHYS32_ENTRY
    std::memcpy(&f[0x90c], "Xen", 4);
    img::store_le32(&f[0x910], 0x1000040);
  }
  return f;
}

TEST(ElfLoaderTest, LoadsSegmentAndZeroesBss) {
  FakeRam ram;
  ram.buf[0x200000 + 0x100] = 0x77;
  auto k = load_elf(make_elf(0x200000, 0x2000, false, 0x200000), ram.mem);
  ASSERT_TRUE(k) << k.error().to_string();
  EXPECT_EQ(k->mode, EntryMode::kLong64);
  EXPECT_EQ(k->entry, 0x200000u);
  EXPECT_EQ(ram.buf[0x200000], 0xcc);
  EXPECT_EQ(ram.buf[0x200100], 0);
  EXPECT_EQ(k->end, 0x202000u);
}

TEST(ElfLoaderTest, FindsPvhEntry) {
  FakeRam ram;
  auto k = load_elf(make_elf(0x1000000, 0x1000, true, 0xffffffff81000000), ram.mem);
  ASSERT_TRUE(k) << k.error().to_string();
  EXPECT_TRUE(k->pvh);
  EXPECT_EQ(k->mode, EntryMode::kProtected32);
  EXPECT_EQ(k->entry, 0x1000040u);
}

TEST(ElfLoaderTest, RejectsSegmentsOutsideMemory) {
  FakeRam ram;
  auto k = load_elf(make_elf(kMem - 0x100, 0x1000, false, kMem - 0x100), ram.mem);
  ASSERT_FALSE(k);
  EXPECT_NE(k.error().message().find("outside guest memory"), std::string::npos);
  EXPECT_FALSE(load_elf(make_elf(0xfffffffffffff000, 0x2000, false, 0x1000), ram.mem));
}

TEST(ElfLoaderTest, RejectsHostileHeaders) {
  FakeRam ram;
  auto f = make_elf(0x200000, 0x1000, false, 0x200000);
  std::vector<uint8_t> t(f.begin(), f.begin() + 40);
  EXPECT_FALSE(load_elf(t, ram.mem));  // truncated
  auto g = f;
  g[1] = 'X';
  EXPECT_FALSE(load_elf(g, ram.mem));  // magic
  g = f;
  img::store_le64(&g[32], 0xfffffffffffffff0);
  EXPECT_FALSE(load_elf(g, ram.mem));  // phoff overflow
  g = f;
  img::store_le64(&g[64 + 32], 0x10000);
  EXPECT_FALSE(load_elf(g, ram.mem));  // filesz past the file
  g = f;
  img::store_le64(&g[64 + 32], 0x2000);
  EXPECT_FALSE(load_elf(g, ram.mem));  // filesz > memsz
  g = f;
  g[4] = 1;
  EXPECT_FALSE(load_elf(g, ram.mem));  // 32-bit
  EXPECT_FALSE(load_elf(make_elf(0x200000, 0x1000, false, kMem + 5), ram.mem));  // entry
}

TEST(ElfLoaderTest, RejectsTruncatedPvhNote) {
  FakeRam ram;
  auto f = make_elf(0x1000000, 0x1000, true, 0x1000000);
  img::store_le32(&f[0x900], 0xfffffff0);  // namesz runs past the note segment
  auto k = load_elf(f, ram.mem);
  ASSERT_TRUE(k);
  EXPECT_FALSE(k->pvh);
}

TEST(CmdlineTest, LengthCheckedAgainstKernelLimit) {
  EXPECT_TRUE(check_cmdline(std::string(2047, 'a'), 2047));
  auto s = check_cmdline(std::string(2048, 'a'), 2047);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("command line too long"), std::string::npos);
}

TEST(InitrdTest, PlacedHighAlignedAndAboveKernel) {
  auto a = place_initrd(10000, 0x2000000, 0x37ffffff, 64 << 20);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a % 4096, 0u);
  EXPECT_LE(*a + 10000, 64u << 20);
  EXPECT_GE(*a, 0x2000000u);
  auto b = place_initrd(10000, 0, 0x00ffffff, 64 << 20);  // initrd_addr_max below RAM end
  ASSERT_TRUE(b);
  EXPECT_LE(*b + 10000, 0x1000000u);
  EXPECT_FALSE(place_initrd(60 << 20, 0x2000000, 0x37ffffff, 64 << 20));
}

TEST(ZeroPageTest, FieldsAtDocumentedOffsets) {
  FakeRam ram;
  auto f = make_bzimage();
  auto k = load_bzimage(f, ram.mem, kMem);
  ASSERT_TRUE(k);
  BootInfo info;
  info.cmdline = "console=ttyS0";
  info.initrd_addr = 0x3000000;
  info.initrd_size = 12345;
  info.rsdp_addr = 0xe0000;
  info.e820 = build_e820(kMem);
  auto z = build_zero_page(*k, info, layout::kCmdline);
  ASSERT_TRUE(z);
  EXPECT_EQ(img::load_le32(&(*z)[0x228]), layout::kCmdline);
  EXPECT_EQ(img::load_le32(&(*z)[0x218]), 0x3000000u);
  EXPECT_EQ(img::load_le32(&(*z)[0x21c]), 12345u);
  EXPECT_EQ((*z)[0x210], 0xff);
  EXPECT_EQ(img::load_le64(&(*z)[0x70]), 0xe0000u);
  EXPECT_EQ((*z)[0x1e8], info.e820.size());
  EXPECT_EQ(0, std::memcmp(&(*z)[0x202], "HdrS", 4));
  EXPECT_EQ(img::load_le64(&(*z)[0x2d0 + 20 * 3]), 0x100000u);
  EXPECT_EQ(img::load_le32(&(*z)[0x2d0 + 20 * 3 + 16]), 1u);
}

TEST(PvhTest, StartInfoLayout) {
  BootInfo info;
  info.initrd_addr = 0x3000000;
  info.initrd_size = 4096;
  info.e820 = build_e820(kMem);
  auto b = build_pvh_start_info(info, 0x6000, 0x20000);
  EXPECT_EQ(img::load_le32(&b[0]), 0x336ec578u);
  EXPECT_EQ(img::load_le32(&b[12]), 1u);
  EXPECT_EQ(img::load_le64(&b[24]), 0x20000u);
  uint64_t modlist = img::load_le64(&b[16]);
  EXPECT_EQ(img::load_le64(&b[modlist - 0x6000]), 0x3000000u);
  EXPECT_EQ(img::load_le32(&b[48]), info.e820.size());
}

}  // namespace
}  // namespace vmm
