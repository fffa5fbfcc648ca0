// Crash safety of qcow2 resize (resize.cc): the file starts failing at every mutating operation
// of a resize in turn (FaultFile::fail_from_op), then the machine "crashes" (unflushed writes
// dropped, or a random subset of them kept), and then
//   - the image opens read/write,
//   - its size is the old or the new one,
//   - check finds no corruption (leaked clusters are allowed),
//   - the data below both sizes reads as before, and new space reads as zeros,
//   - and the image takes more writes and closes clean of corruption.
// Grows that relocate the L1 table (512-byte clusters make a big table cheap) and shrinks that
// free L2 tables are both cut at every point.
#include <random>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

struct ResizeCase {
  const char* name;
  uint64_t old_size;
  uint64_t new_size;
  Preallocation prealloc;
  bool lazy;
};

std::vector<uint8_t> guest_pattern(uint64_t n) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 13 + i / 512 + 1);
  return v;
}

// A fresh image of c.old_size filled with the pattern, durable (closed and reopened).
void setup(IoLoop& loop, test::MemImage& m, const ResizeCase& c) {
  auto data = guest_pattern(c.old_size);
  ASSERT_OK(loop.run(m.drv->write(0, data.data(), data.size())));
  m.reopen();
}

Qcow2CreateOptions create_opts(const ResizeCase& c) {
  return {.size = c.old_size, .cluster_size = 512, .lazy_refcounts = c.lazy};
}

// Mutating file operations one resize makes on a fresh image.
uint64_t ops_of_resize(const ResizeCase& c) {
  auto loop = make_loop();
  test::MemImage m(*loop, create_opts(c));
  setup(*loop, m, c);
  uint64_t before = m.fault_file().mutating_ops_seen();
  auto s =
      loop->run(m.drv->resize(c.new_size, {.preallocation = c.prealloc, .allow_shrink = true}));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  return m.fault_file().mutating_ops_seen() - before;
}

void cut_at(const ResizeCase& c, uint64_t k, bool keep_random, uint64_t seed) {
  SCOPED_TRACE(std::string(c.name) + ": file ops fail from op " + std::to_string(k) +
               (keep_random ? ", random subset of unflushed writes kept" : ", unflushed dropped"));
  auto loop = make_loop();
  test::MemImage m(*loop, create_opts(c));
  ASSERT_NO_FATAL_FAILURE(setup(*loop, m, c));
  m.fault_file().fail_from_op(k);
  auto s =
      loop->run(m.drv->resize(c.new_size, {.preallocation = c.prealloc, .allow_shrink = true}));
  if (!s) {
    EXPECT_EQ(s.error().code(), ErrorCode::kIo) << s.error().to_string();
  }
  m.fault_file().stop_failing();
  if (keep_random) {
    std::mt19937_64 rng(seed);
    m.fault_file().crash_keep_random_subset(rng);
  } else {
    m.fault_file().crash_drop_unflushed();
  }
  m.abandon();

  auto o = m.open({});
  ASSERT_TRUE(o.has_value()) << "reopen after crash: " << o.error().to_string();
  uint64_t size = m.drv->size();
  ASSERT_TRUE(size == c.old_size || size == c.new_size) << "size after crash: " << size;
  auto r = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_OK(r);
  std::string msgs;
  for (size_t i = 0; i < r->messages.size() && i < 10; ++i) msgs += r->messages[i] + "\n";
  ASSERT_EQ(r->corruptions, 0u) << msgs;
  ASSERT_EQ(r->check_errors, 0u) << msgs;

  // Data below both sizes is intact; a grown area reads as zeros.
  uint64_t kept = std::min(c.old_size, c.new_size);
  auto want = guest_pattern(kept);
  std::vector<uint8_t> got(kept);
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  ASSERT_TRUE(got == want) << "data below the new end changed";
  if (size > c.old_size) {
    std::vector<uint8_t> tail(size - c.old_size);
    ASSERT_OK(loop->run(m.drv->read(c.old_size, tail.data(), tail.size())));
    for (size_t i = 0; i < tail.size(); ++i) {
      ASSERT_EQ(tail[i], 0) << "grown byte " << c.old_size + i << " is not zero";
    }
  }
  // The image keeps working: allocation must not hand out clusters still in use.
  std::vector<uint8_t> more(3000, 0x5a);
  ASSERT_OK(loop->run(m.drv->write(size - more.size(), more.data(), more.size())));
  ASSERT_OK(loop->run(m.drv->write(0, more.data(), more.size())));
  m.close();
  test::expect_clean(*loop, m, /*allow_leaks=*/true);
}

class Qcow2ResizeCrash : public ::testing::TestWithParam<ResizeCase> {};

TEST_P(Qcow2ResizeCrash, EveryCutPoint) {
  const ResizeCase& c = GetParam();
  uint64_t n = ops_of_resize(c);
  ASSERT_GT(n, 2u);
  for (uint64_t k = 0; k <= n; ++k) {
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, false, 0));
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, true, k * 31 + 7));
  }
}

// 512-byte clusters: an L2 table maps 32 KiB, an L1 cluster holds 64 entries (2 MiB).
INSTANTIATE_TEST_SUITE_P(
    Cases, Qcow2ResizeCrash,
    ::testing::Values(
        // 2 L1 entries -> 160: the table moves to three new clusters.
        ResizeCase{"grow_relocating_l1", 64 << 10, 5 << 20, Preallocation::kOff, false},
        ResizeCase{"grow_relocating_l1_lazy", 64 << 10, 5 << 20, Preallocation::kOff, true},
        ResizeCase{"grow_relocating_l1_metadata", 64 << 10, 3 << 19, Preallocation::kMetadata,
                   false},
        ResizeCase{"grow_full", 64 << 10, 200 << 10, Preallocation::kFull, false},
        // 192 KiB of data -> 40 KiB: data clusters and 4 L2 tables freed, the file cut.
        ResizeCase{"shrink", 192 << 10, 40 << 10, Preallocation::kOff, false},
        ResizeCase{"shrink_lazy", 192 << 10, 40 << 10, Preallocation::kOff, true}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
