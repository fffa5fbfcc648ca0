// GuestRam: the host mapping behind guest RAM. --mem-prealloc must leave every page resident
// before the guest runs, a plain mapping none, and a host without the huge pages asked for must
// answer with an error that says how to reserve them, not a SIGBUS later.
#include "kvm/guest_ram.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include <fstream>
#include <string>
#include <vector>

namespace vmm {
namespace {

// How many of the region's pages are resident (mincore).
uint64_t resident_pages(const GuestMemory::Region& r) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((r.size + page - 1) / page);
  EXPECT_EQ(::mincore(r.host, r.size, v.data()), 0) << strerror(errno);
  uint64_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

long free_huge_pages() {
  std::ifstream f("/proc/meminfo");
  for (std::string l; std::getline(f, l);) {
    if (l.starts_with("HugePages_Free:")) return std::stol(l.substr(15));
  }
  return 0;
}

TEST(GuestRam, PlainMemoryIsBackedOnlyWhenTouched) {
  auto ram = GuestRam::create(8 << 20, false);
  ASSERT_TRUE(ram) << ram.error().message();
  ASSERT_EQ(ram->memory().regions().size(), 1u);
  EXPECT_EQ(resident_pages(ram->memory().regions()[0]), 0u);
}

TEST(GuestRam, PreallocBacksEveryPageBeforeTheGuestRuns) {
  auto ram = GuestRam::create(8 << 20, false, true);
  ASSERT_TRUE(ram) << ram.error().message();
  const GuestMemory::Region& r = ram->memory().regions()[0];
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(resident_pages(r), r.size / page);
  // The memory still reads as zeros: populating wrote nothing the guest could see.
  for (uint64_t o = 0; o < r.size; o += 4093) ASSERT_EQ(r.host[o], 0) << o;
  // A balloon's discard gives prealloc'ed pages back like any others.
  ASSERT_TRUE(ram->memory().discard(1 << 20, 2 << 20));
  EXPECT_EQ(resident_pages(r), r.size / page - (2 << 20) / page);
}

// Two huge pages more than the pool has free: missing whatever the host reserved.
uint64_t more_than_the_pool() { return (uint64_t(free_huge_pages()) + 2) << 21; }

TEST(GuestRam, PreallocOfMissingHugePagesFailsNowAndSaysHowToReserveThem) {
  auto ram = GuestRam::create(more_than_the_pool(), true, true);
  ASSERT_FALSE(ram);
  EXPECT_NE(ram.error().message().find("nr_hugepages"), std::string::npos) << ram.error().message();
}

TEST(GuestRam, MissingHugePagesFailAtStartEvenWithoutPrealloc) {
  auto ram = GuestRam::create(more_than_the_pool(), true);
  ASSERT_FALSE(ram);
  EXPECT_NE(ram.error().message().find("nr_hugepages"), std::string::npos) << ram.error().message();
}

// A real hugetlb pool: the mapping reserves its pages, the regions say 2 MiB pages, and a
// discard of a whole huge page (MADV_REMOVE) gives it back to the pool and reads as zeros.
TEST(GuestRam, DiscardGivesAHugePageBackToThePool) {
  if (free_huge_pages() < 2) {
    GTEST_SKIP() << "needs 2 free 2 MiB huge pages (echo 2 > /proc/sys/vm/nr_hugepages)";
  }
  const long free0 = free_huge_pages();
  auto ram = GuestRam::create(4 << 20, true, true);
  ASSERT_TRUE(ram) << ram.error().message();
  const GuestMemory& m = ram->memory();
  EXPECT_EQ(m.host_page_size(0), 2u << 20);
  EXPECT_EQ(free_huge_pages(), free0 - 2);
  std::memset(m.regions()[0].host, 0x5a, 4 << 20);
  EXPECT_FALSE(m.discard(0, 4096));  // a 4 KiB piece of a huge page: refused, kept
  EXPECT_EQ(m.regions()[0].host[0], 0x5a);
  ASSERT_TRUE(m.discard(2 << 20, 2 << 20));
  EXPECT_EQ(free_huge_pages(), free0 - 1);
  EXPECT_EQ(m.regions()[0].host[(2 << 20) + 100], 0);
  EXPECT_EQ(m.regions()[0].host[(2 << 20) - 1], 0x5a);
}

TEST(GuestRam, PreallocKeepsTheSizeChecks) {
  EXPECT_FALSE(GuestRam::create(0, false, true));
  EXPECT_FALSE(GuestRam::create(4097, false, true));
  auto ram = GuestRam::create(3 << 20, true, true);
  ASSERT_FALSE(ram);
  EXPECT_NE(ram.error().message().find("multiple of 2 MiB"), std::string::npos);
}

}  // namespace
}  // namespace vmm
