// e820, MP table and ACPI builders: layout and checksums.
#include <gtest/gtest.h>

#include <cstring>

#include "img/bytes.h"
#include "kvm/guest_ram.h"
#include "x86/acpi.h"
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
