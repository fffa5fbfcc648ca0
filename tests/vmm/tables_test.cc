// e820, MP table and ACPI builders: layout and checksums.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "img/bytes.h"
#include "kvm/guest_ram.h"
#include "x86/acpi.h"
#include "devices/acpi_sleep.h"
#include "x86/dsdt.h"
#include "x86/cpu_setup.h"
#include "x86/e820.h"
#include "x86/mptable.h"

namespace vmm {
namespace {

TEST(E820Test, SmallMemoryHasNoHighRange) {
  auto m = build_e820(512ull << 20);
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[3].addr, 0x100000u);
  EXPECT_EQ(m[3].addr + m[3].size, 512ull << 20);
  EXPECT_EQ(m[1].type, E820Entry::kReserved);
}

TEST(E820Test, LargeMemorySkipsPciHole) {
  auto m = build_e820(4ull << 30);
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[3].addr + m[3].size, kPciHoleStart);
  EXPECT_EQ(m[4].addr, k4GiB);
  EXPECT_EQ(m[4].size, (4ull << 30) - kPciHoleStart);
  for (auto& e : m) EXPECT_FALSE(e.addr < kPciHoleEnd && e.addr + e.size > kPciHoleStart);
}

TEST(MpTableTest, ChecksumsAndCounts) {
  for (uint32_t cpus : {1u, 2u, 8u, kMaxCpus}) {
    auto b = build_mptable(cpus, 0x9fc00);
    ASSERT_TRUE(b);
    EXPECT_LE(b->size(), 1024u);
    EXPECT_EQ(0, std::memcmp(b->data(), "_MP_", 4));
    EXPECT_EQ(byte_sum(b->data(), 16), 0);
    EXPECT_EQ(img::load_le32(b->data() + 4), 0x9fc10u);
    const uint8_t* t = b->data() + 16;
    EXPECT_EQ(0, std::memcmp(t, "PCMP", 4));
    uint16_t len = uint16_t(t[4] | t[5] << 8);
    EXPECT_EQ(16u + len, b->size());
    EXPECT_EQ(byte_sum(t, len), 0);
    EXPECT_EQ(t[44], 0);       // first entry: processor
    EXPECT_EQ(t[44 + 3], 3);   // enabled + BSP
  }
  EXPECT_FALSE(build_mptable(0, 0x9fc00));
  EXPECT_FALSE(build_mptable(kMaxCpus + 1, 0x9fc00));
}

uint32_t le32(const uint8_t* p) { return img::load_le32(p); }
uint32_t le16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }

TEST(AcpiTest, TablesChainAndCheckSum) {
  const uint64_t base = 0xe0000;
  auto t = build_acpi_tables(4, base);
  ASSERT_TRUE(t);
  const uint8_t* b = t->bytes.data();
  ASSERT_EQ(t->rsdp, base);
  EXPECT_EQ(0, std::memcmp(b, "RSD PTR ", 8));
  EXPECT_EQ(byte_sum(b, 20), 0);
  EXPECT_EQ(byte_sum(b, 36), 0);
  uint64_t xsdt = img::load_le64(b + 24) - base;
  EXPECT_EQ(0, std::memcmp(b + xsdt, "XSDT", 4));
  EXPECT_EQ(byte_sum(b + xsdt, le32(b + xsdt + 4)), 0);
  int found_madt = 0;
  for (int i = 0; i < 2; ++i) {
    uint64_t at = img::load_le64(b + xsdt + 36 + 8 * i) - base;
    uint32_t len = le32(b + at + 4);
    EXPECT_EQ(byte_sum(b + at, len), 0);
    if (std::memcmp(b + at, "FACP", 4) == 0) {
      uint64_t dsdt = img::load_le64(b + at + 140) - base;
      EXPECT_EQ(0, std::memcmp(b + dsdt, "DSDT", 4));
      EXPECT_EQ(byte_sum(b + dsdt, le32(b + dsdt + 4)), 0);
      EXPECT_TRUE(le32(b + at + 112) & (1u << 20));
      // SLEEP_CONTROL_REG, SLEEP_STATUS_REG: byte-wide System I/O at the AcpiSleep ports.
      for (int r = 0; r < 2; ++r) {
        const uint8_t* gas = b + at + 244 + 12 * r;
        EXPECT_EQ(gas[0], 1);
        EXPECT_EQ(gas[1], 8);
        EXPECT_EQ(gas[3], 1);
        EXPECT_EQ(img::load_le64(gas + 4), AcpiSleep::kBase + r);
      }
    }
    if (std::memcmp(b + at, "APIC", 4) == 0) {
      ++found_madt;
      int lapics = 0;
      for (uint32_t p = 44; p < len; p += b[at + p + 1]) {
        ASSERT_GT(b[at + p + 1], 0);
        if (b[at + p] == 0) ++lapics;
      }
      EXPECT_EQ(lapics, 4);
    }
  }
  EXPECT_EQ(found_madt, 1);
}

// 20.2.4: the PkgLength counts its own bytes; one byte holds up to 63.
TEST(AmlTest, PkgLengthEncodings) {
  EXPECT_EQ(aml_pkg_length(0), (std::vector<uint8_t>{0x01}));
  EXPECT_EQ(aml_pkg_length(62), (std::vector<uint8_t>{0x3f}));
  EXPECT_EQ(aml_pkg_length(63), (std::vector<uint8_t>{0x41, 0x04}));     // 65 = 0x041
  EXPECT_EQ(aml_pkg_length(0xffd), (std::vector<uint8_t>{0x4f, 0xff}));  // 0xfff
  EXPECT_EQ(aml_pkg_length(0xffe), (std::vector<uint8_t>{0x81, 0x00, 0x01}));  // 0x1001
}

// Decodes a PkgLength at b; returns the package's total length from b (n_bytes set).
size_t pkg_len(const uint8_t* b, size_t* n_bytes) {
  size_t extra = b[0] >> 6;
  size_t len = extra ? (b[0] & 0x0f) : (b[0] & 0x3f);
  for (size_t i = 0; i < extra; ++i) len |= size_t(b[1 + i]) << (4 + 8 * i);
  *n_bytes = 1 + extra;
  return len;
}

// The root bridge as Linux reads it: \_SB.PCI0 with the PNP0A08/PNP0A03 ids (the bytes iasl
// emits for EisaId) and a _CRS whose windows are the ones vmm's PCI bus allocates from.
TEST(AmlTest, DsdtDescribesThePciRootBridge) {
  std::vector<uint8_t> a = build_dsdt_aml({kPciHoleStart, kPciHoleEnd});
  ASSERT_GT(a.size(), 20u);
  // Scope (\_SB_) first, then Name (_S5_, Package () { 5, 0 }); Device (PCI0) spans the rest
  // of the scope.
  ASSERT_EQ(a[0], 0x10);
  size_t nb;
  const size_t scope_end = pkg_len(&a[1], &nb) + 1;
  const std::vector<uint8_t> s5 = {0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00};
  ASSERT_EQ(scope_end + s5.size(), a.size());
  EXPECT_TRUE(std::equal(s5.begin(), s5.end(), a.begin() + scope_end));
  a.resize(scope_end);
  size_t at = 1 + nb;
  ASSERT_EQ(0, std::memcmp(&a[at], "\\_SB_", 5));
  at += 5;
  ASSERT_EQ(a[at], 0x5b);
  ASSERT_EQ(a[at + 1], 0x82);
  const size_t pci0_end = pkg_len(&a[at + 2], &nb) + at + 2;
  ASSERT_EQ(0, std::memcmp(&a[at + 2 + nb], "PCI0", 4));
  // Then Device (COM1), the rest of the scope: PNP0501 with I/O 0x3F8+8 and GSI 4, edge,
  // active-high, so that a hardware-reduced Linux can request the 8250's interrupt.
  ASSERT_EQ(a[pci0_end], 0x5b);
  ASSERT_EQ(a[pci0_end + 1], 0x82);
  EXPECT_EQ(pkg_len(&a[pci0_end + 2], &nb) + pci0_end + 2, a.size());
  ASSERT_EQ(0, std::memcmp(&a[pci0_end + 2 + nb], "COM1", 4));
  std::vector<uint8_t> com1(a.begin() + pci0_end, a.end());
  auto com1_has = [&](const std::vector<uint8_t>& needle) {
    return std::search(com1.begin(), com1.end(), needle.begin(), needle.end()) != com1.end();
  };
  EXPECT_TRUE(com1_has({0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01}));
  EXPECT_TRUE(com1_has({0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}));
  EXPECT_TRUE(com1_has({0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00, 0x79, 0x00}));
  a.resize(pci0_end);
  auto find = [&](const std::vector<uint8_t>& needle) {
    return std::search(a.begin(), a.end(), needle.begin(), needle.end()) != a.end();
  };
  EXPECT_TRUE(find({0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x08}));
  EXPECT_TRUE(find({0x08, '_', 'C', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03}));
  EXPECT_TRUE(find({0x08, '_', 'B', 'B', 'N', 0x00}));
  // _CRS: Buffer (size) { descriptors..., End Tag }, decoded back into ranges.
  const uint8_t crs[] = {0x08, '_', 'C', 'R', 'S', 0x11};
  auto it = std::search(a.begin(), a.end(), std::begin(crs), std::end(crs));
  ASSERT_NE(it, a.end());
  size_t p = size_t(it - a.begin()) + sizeof crs;
  size_t buf_end = p + pkg_len(&a[p], &nb);
  p += nb;
  ASSERT_EQ(a[p], 0x0a);  // ByteConst buffer size
  size_t size = a[p + 1];
  p += 2;
  ASSERT_EQ(p + size, buf_end);
  std::vector<std::string> ranges;
  bool end_tag = false;
  while (p < buf_end) {
    uint8_t tag = a[p];
    if (tag == 0x79) {
      end_tag = p + 2 == buf_end;
      break;
    }
    if (tag == 0x47) {
      ranges.push_back(img::strfmt("io %x+%x", le16(&a[p + 2]), a[p + 7]));
      p += 8;
      continue;
    }
    ASSERT_TRUE(tag == 0x88 || tag == 0x87) << int(tag);
    size_t len = le16(&a[p + 1]);
    uint8_t type = a[p + 3];
    EXPECT_EQ(a[p + 4], 0x0c);  // fixed min and max, producer
    if (tag == 0x88) {
      ranges.push_back(img::strfmt("%s %x-%x", type == 2 ? "bus" : "iow", le16(&a[p + 8]),
                                   le16(&a[p + 10])));
      EXPECT_EQ(le16(&a[p + 14]), le16(&a[p + 10]) - le16(&a[p + 8]) + 1);
    } else {
      ranges.push_back(img::strfmt("mem %x-%x", le32(&a[p + 10]), le32(&a[p + 14])));
      EXPECT_EQ(le32(&a[p + 22]), le32(&a[p + 14]) - le32(&a[p + 10]) + 1);
    }
    p += 3 + len;
  }
  EXPECT_TRUE(end_tag);
  EXPECT_EQ(ranges, (std::vector<std::string>{"bus 0-0", "io cf8+8", "iow 0-cf7", "iow d00-ffff",
                                              "mem c0000000-febfffff"}));
}

TEST(GdtTest, EntryRoundTrip) {
  uint64_t code = gdt_entry(0xa09b, 0, 0xfffff);
  EXPECT_EQ(code, 0x00af9b000000ffffull);
  kvm_segment s = segment_from_gdt(code, 0x08);
  EXPECT_EQ(s.l, 1);
  EXPECT_EQ(s.limit, 0xffffffffu);
  EXPECT_EQ(s.type, 0xb);
  EXPECT_EQ(s.present, 1);
}

}  // namespace
}  // namespace vmm
