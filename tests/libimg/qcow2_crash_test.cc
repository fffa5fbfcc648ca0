// Crash safety of the qcow2 driver (DESIGN.md: "a crash leaves at worst leaked clusters, never
// corruption"). A write workload runs on a FaultFile and is cut after op k: the unflushed
// writes are dropped (or a random subset of them kept, as a disk with a volatile cache may),
// the driver is dropped without close, and then
//   - the image opens read-write (a dirty lazy-refcount image is repaired on the way),
//   - check finds no corruption (leaked clusters are allowed),
//   - every byte that no op touched after the last completed flush reads as it was then,
//   - and the image takes more writes and closes clean of corruption.
// The same holds when the file starts failing with EIO mid-workload: the failing request
// returns an error and nothing crashes.
#include <random>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2_test_util.h"
#include "qcow2_workload.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::WorkOp;

struct CrashCase {
  const char* name;
  uint32_t cluster_size;
  uint32_t refcount_bits;
  bool lazy;
  uint64_t size;
};

enum class CrashMode { kDropUnflushed, kKeepRandomSubset };

// The guest bytes as of the last completed flush, and which bytes later ops may have changed.
struct Expect {
  explicit Expect(uint64_t size) : durable(size, 0), current(size, 0), touched(size, false) {}
  void before(const WorkOp& op) {
    if (op.kind != WorkOp::kFlush) std::fill_n(touched.begin() + op.off, op.len, true);
  }
  void after_success(const WorkOp& op, uint64_t cluster_size) {
    test::apply_to_model(current, op, cluster_size);
    if (op.kind == WorkOp::kFlush) {
      durable = current;
      std::fill(touched.begin(), touched.end(), false);
    }
  }
  std::vector<uint8_t> durable;
  std::vector<uint8_t> current;
  std::vector<bool> touched;
};

Qcow2CreateOptions create_opts(const CrashCase& c) {
  return {.size = c.size,
          .cluster_size = c.cluster_size,
          .refcount_bits = c.refcount_bits,
          .lazy_refcounts = c.lazy};
}

// After the crash: opens, checks, compares the untouched bytes, writes once more, closes.
void verify_after_crash(IoLoop& loop, test::MemImage& m, const Expect& ex, const std::string& at) {
  SCOPED_TRACE(at);
  auto s = m.open({});
  ASSERT_TRUE(s.has_value()) << "reopen after crash: " << s.error().to_string();
  auto r = loop.run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  std::string msgs;
  for (size_t i = 0; i < r->messages.size() && i < 20; ++i) msgs += r->messages[i] + "\n";
  ASSERT_EQ(r->corruptions, 0u) << msgs;
  ASSERT_EQ(r->check_errors, 0u) << msgs;

  std::vector<uint8_t> got(ex.durable.size());
  ASSERT_OK(loop.run(m.drv->read(0, got.data(), got.size())));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!ex.touched[i] && got[i] != ex.durable[i]) {
      FAIL() << "byte " << i << " written before the last flush reads " << int(got[i]) << ", want "
             << int(ex.durable[i]);
    }
  }

  // The repaired image keeps working: allocation after a crash must not hand out clusters that
  // are still in use.
  std::vector<uint8_t> more(5000, 0xa5);
  uint64_t off = got.size() / 3 + 7;
  ASSERT_OK(loop.run(m.drv->write(off, more.data(), more.size())));
  ASSERT_OK(loop.run(m.drv->write_zeroes(got.size() / 2, 3 * m.drv->size() / 16, {})));
  m.close();
  test::expect_clean(loop, m, /*allow_leaks=*/true);
}

// Runs ops[0..cut) on a fresh image, crashes, and verifies.
void crash_after(const CrashCase& c, const std::vector<WorkOp>& ops, size_t cut, CrashMode mode,
                 uint64_t seed) {
  auto loop = make_loop();
  test::MemImage m(*loop, create_opts(c));
  ASSERT_TRUE(m.drv);
  Expect ex(c.size);
  for (size_t i = 0; i < cut; ++i) {
    ex.before(ops[i]);
    auto s = loop->run(test::run_op(*m.drv, ops[i]));
    ASSERT_TRUE(s.has_value()) << "op " << i << " " << test::describe(ops[i]) << ": "
                               << s.error().to_string();
    ex.after_success(ops[i], c.cluster_size);
  }
  if (mode == CrashMode::kDropUnflushed) {
    m.fault_file().crash_drop_unflushed();
  } else {
    std::mt19937_64 rng(seed);
    m.fault_file().crash_keep_random_subset(rng);
  }
  m.abandon();
  verify_after_crash(
      *loop, m, ex,
      std::string("crash after op ") + std::to_string(cut) +
          (mode == CrashMode::kDropUnflushed ? " (unflushed dropped)" : " (random subset kept)") +
          " seed " + std::to_string(seed));
}

// Runs ops until the file starts failing (fail_after mutating file ops from op `start` on):
// the failing request reports an error; then crash and verify.
void fail_midway(const CrashCase& c, const std::vector<WorkOp>& ops, size_t start,
                 uint64_t fail_after, uint64_t seed) {
  auto loop = make_loop();
  test::MemImage m(*loop, create_opts(c));
  ASSERT_TRUE(m.drv);
  Expect ex(c.size);
  bool failed = false;
  for (size_t i = 0; i < ops.size() && !failed; ++i) {
    if (i == start) m.fault_file().fail_from_op(fail_after);
    ex.before(ops[i]);
    auto s = loop->run(test::run_op(*m.drv, ops[i]));
    if (!s) {
      ASSERT_GE(i, start) << "op " << i << " failed before any fault: " << s.error().to_string();
      EXPECT_EQ(s.error().code(), ErrorCode::kIo) << s.error().to_string();
      failed = true;
      // Reads and a flush after the failure may fail too, but must not crash.
      std::vector<uint8_t> buf(4096);
      uint64_t n = std::min<uint64_t>(buf.size(), ops[i].len);
      (void)loop->run(m.drv->read(ops[i].off, buf.data(), n));
      (void)loop->run(m.drv->flush());
      break;
    }
    ex.after_success(ops[i], c.cluster_size);
  }
  m.fault_file().stop_failing();
  std::mt19937_64 rng(seed);
  if (seed & 1) {
    m.fault_file().crash_keep_random_subset(rng);
  } else {
    m.fault_file().crash_drop_unflushed();
  }
  m.abandon();
  verify_after_crash(*loop, m, ex,
                     "I/O errors from file op " + std::to_string(fail_after) + " after op " +
                         std::to_string(start) + (failed ? "" : " (no op failed)"));
}

class Qcow2Crash : public ::testing::TestWithParam<CrashCase> {};

// Short workload: cut after every op, both crash modes.
TEST_P(Qcow2Crash, EveryCutPointOfAShortWorkload) {
  const CrashCase& c = GetParam();
  auto ops = test::make_workload(c.cluster_size + c.refcount_bits + c.lazy, c.size, 36,
                                 6 * c.cluster_size, 5);
  for (size_t cut = 0; cut <= ops.size(); ++cut) {
    ASSERT_NO_FATAL_FAILURE(crash_after(c, ops, cut, CrashMode::kDropUnflushed, 0));
    ASSERT_NO_FATAL_FAILURE(crash_after(c, ops, cut, CrashMode::kKeepRandomSubset, cut * 7 + 1));
  }
}

// Long workload (many L2 tables and refcount blocks, refcount-table growth): random cut points.
TEST_P(Qcow2Crash, RandomCutPointsOfALongWorkload) {
  const CrashCase& c = GetParam();
  auto ops = test::make_workload(c.cluster_size * 3 + c.refcount_bits + c.lazy, c.size, 160,
                                 24 * c.cluster_size, 9);
  std::mt19937_64 rng(c.cluster_size ^ c.refcount_bits);
  for (int i = 0; i < 6; ++i) {
    size_t cut = rng() % (ops.size() + 1);
    ASSERT_NO_FATAL_FAILURE(crash_after(
        c, ops, cut, i % 2 ? CrashMode::kKeepRandomSubset : CrashMode::kDropUnflushed, rng()));
  }
}

TEST_P(Qcow2Crash, IoErrorsMidWorkload) {
  const CrashCase& c = GetParam();
  auto ops = test::make_workload(c.cluster_size * 5 + c.refcount_bits + c.lazy, c.size, 60,
                                 12 * c.cluster_size, 6);
  std::mt19937_64 rng(c.refcount_bits * 77 + c.lazy);
  for (int i = 0; i < 12; ++i) {
    size_t start = rng() % ops.size();
    uint64_t fail_after = rng() % 12;
    ASSERT_NO_FATAL_FAILURE(fail_midway(c, ops, start, fail_after, rng()));
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, Qcow2Crash,
                         ::testing::Values(CrashCase{"c512_rc16", 512, 16, false, 1 << 20},
                                           CrashCase{"c512_rc64_lazy", 512, 64, true, 1 << 20},
                                           CrashCase{"c512_rc1", 512, 1, false, 2 << 20},
                                           CrashCase{"c4k_rc64", 4096, 64, false, 8 << 20},
                                           CrashCase{"c4k_rc16_lazy", 4096, 16, true, 8 << 20},
                                           CrashCase{"c4k_rc1_lazy", 4096, 1, true, 8 << 20}),
                         [](const auto& info) { return std::string(info.param.name); });

// --- Regressions found by the tests above ----------------------------------------------------

// Fills the L2 cache (4 tables: OpenOptions::l2_cache_size is tiny) with other tables, so the
// dirty L2 table of guest cluster 0 is written back by eviction, without a flush of the file.
void evict_l2_tables(IoLoop& loop, test::MemImage& m, uint64_t l2_span) {
  uint8_t b;
  for (uint64_t t = 1; t <= 6; ++t) ASSERT_OK(loop.run(m.drv->read(t * l2_span, &b, 1)));
}

// Bug: a partial write into a cluster that needs no new allocation (a "zero, allocated" cluster
// reused in place) or that allocates with lazy refcounts set no ordering between the
// whole-cluster data write and the L2 entry: an evicted L2 table could reach the disk before
// the data, so after a crash the untouched head and tail of the cluster read the host cluster's
// stale bytes (or, for a cluster at the end of the file, an L2 entry pointed past the end).
void partial_write_then_crash(bool lazy, bool zero_allocated) {
  constexpr uint32_t kCluster = 512;
  constexpr uint64_t kL2Span = uint64_t(kCluster / 8) * kCluster;
  for (uint64_t seed = 0; seed < 48; ++seed) {
    auto loop = make_loop();
    test::MemImage m(*loop,
                     {.size = 8 * kL2Span, .cluster_size = kCluster, .lazy_refcounts = lazy});
    ASSERT_OK(m.open({.l2_cache_size = 1}));
    // L2 tables for every region, and (for the reuse case) old data in guest cluster 0.
    std::vector<uint8_t> old(kCluster, 0xab);
    for (uint64_t t = 0; t < 8; ++t)
      ASSERT_OK(loop->run(m.drv->write(t * kL2Span + kCluster, old.data(), 1)));
    if (zero_allocated) {
      ASSERT_OK(loop->run(m.drv->write(0, old.data(), kCluster)));
      ASSERT_OK(loop->run(m.drv->flush()));
      ASSERT_OK(loop->run(m.drv->write_zeroes(0, kCluster, {.may_unmap = false})));
    }
    ASSERT_OK(loop->run(m.drv->flush()));
    // Cluster 0 reads as zeros, durably. Now write its middle only.
    std::vector<uint8_t> mid(100, 0x5c);
    ASSERT_OK(loop->run(m.drv->write(10, mid.data(), mid.size())));
    ASSERT_NO_FATAL_FAILURE(evict_l2_tables(*loop, m, kL2Span));
    std::mt19937_64 rng(seed);
    m.fault_file().crash_keep_random_subset(rng);
    m.abandon();
    ASSERT_OK(m.open({}));
    std::vector<uint8_t> got(kCluster);
    ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
    for (size_t i = 0; i < got.size(); ++i) {
      if (i >= 10 && i < 110) continue;  // written after the flush: old or new
      ASSERT_EQ(got[i], 0) << "seed " << seed << ": byte " << i
                           << " untouched since the flush lost its zeros";
    }
    m.close();
    test::expect_clean(*loop, m, /*allow_leaks=*/true);
  }
}

TEST(Qcow2CrashRegression, ZeroAllocatedClusterReusedByPartialWriteKeepsZerosAfterCrash) {
  partial_write_then_crash(/*lazy=*/false, /*zero_allocated=*/true);
}

TEST(Qcow2CrashRegression, LazyRefcountsNewClusterDataReachesDiskBeforeItsL2Entry) {
  partial_write_then_crash(/*lazy=*/true, /*zero_allocated=*/false);
  partial_write_then_crash(/*lazy=*/true, /*zero_allocated=*/true);
}

}  // namespace
}  // namespace img
