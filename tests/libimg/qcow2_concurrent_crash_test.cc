// Crash safety with many requests in flight (DESIGN.md: "a crash leaves at worst leaked
// clusters, never corruption"). A batch of ~48 requests (writers sharing clusters, allocating
// writes racing discards, zeroing and flushes) is spawned at once on the loop; the FaultFile
// yields on every operation, so they really interleave. The image file is cut at mutating file
// op N (every op from N on fails with EIO, which is a crash at N as far as the file can tell),
// for N over the whole run, and then the unflushed writes are dropped or a random subset of them
// kept. After the cut:
//   - the image opens read-write (a dirty lazy-refcount image is repaired on the way),
//   - check finds no corruption (leaked clusters are allowed),
//   - every byte reads as a value a request may have left there (qcow2_concurrent.h): a write
//     acknowledged before a completed flush reads back unless a request that may have landed
//     after it touched the same bytes,
//   - and the image takes more writes and closes clean of corruption.
#include <random>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2_concurrent.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::Req;

enum class Backing { kNone, kRaw, kQcow2 };

struct Config {
  const char* name;
  uint32_t cluster_size;
  uint32_t refcount_bits;
  int version;
  bool lazy;
  uint64_t size;
  Backing backing = Backing::kNone;
  uint64_t l2_cache = 0;  // bytes; small values make evictions write L2 tables mid-run
  uint64_t cuts = 40;     // cut points per round (both crash modes at each)
};

constexpr const char* kOverlay = "ov.qcow2";

// One image (and its backing file, if any) in memory, opened through OverlayFs.
class Bench {
 public:
  explicit Bench(const Config& c) : c_(c), loop_(make_loop()), fs_(*loop_, kOverlay) {
    Qcow2CreateOptions o{.size = c.size,
                         .version = c.version,
                         .cluster_size = c.cluster_size,
                         .refcount_bits = c.refcount_bits,
                         .lazy_refcounts = c.lazy};
    if (c.backing != Backing::kNone) make_backing(o);
    initial_.assign(c.size, 0);
    std::copy_n(backing_.begin(), std::min<uint64_t>(backing_.size(), c.size), initial_.begin());
    auto s = loop_->run(create_qcow2(fs_.overlay(), o));
    EXPECT_TRUE(s.has_value()) << s.error().to_string();
  }
  ~Bench() { close(); }

  Status open() {
    drv.reset();
    auto d = loop_->run(open_image(
        *loop_, kOverlay,
        {.l2_cache_size = c_.l2_cache, .refcount_cache_size = c_.l2_cache, .opener = &fs_}));
    if (!d) return Unexpected(d.error());
    drv = std::move(*d);
    return {};
  }
  void close() {
    if (!drv) return;
    auto s = loop_->run(drv->close());
    EXPECT_TRUE(s.has_value()) << s.error().to_string();
    drv.reset();
  }
  IoLoop& loop() { return *loop_; }
  FaultFile& file() { return fs_.overlay(); }
  test::Acceptor acceptor() const { return test::Acceptor(initial_, backing_, c_.cluster_size); }

  std::unique_ptr<BlockDriver> drv;

 private:
  // A backing image a little shorter than the overlay (it ends inside a cluster), holding a
  // pattern: copy-on-write must carry it into partially written clusters.
  void make_backing(Qcow2CreateOptions& o) {
    uint64_t bsize = c_.size - c_.cluster_size - c_.cluster_size / 2 - 512;
    backing_.resize(bsize);
    test::fill_pattern(backing_.data(), 0, bsize, 0xba5e);
    if (c_.backing == Backing::kRaw) {
      fs_.fs().create("base.raw").bytes() = backing_;
      o.backing_file = "base.raw";
      o.backing_format = "raw";
      return;
    }
    bsize = bsize / 512 * 512;  // qcow2 sizes are whole sectors
    backing_.resize(bsize);
    MemFile& f = fs_.fs().create("base.qcow2");
    ASSERT_OK(loop_->run(create_qcow2(f, {.size = bsize, .cluster_size = 4096})));
    auto b = loop_->run(open_image(*loop_, "base.qcow2", {.opener = &fs_}));
    ASSERT_OK(b);
    // Every other 4 KiB cluster holds data; the rest is unallocated (zeros).
    for (uint64_t off = 0; off < bsize; off += 4096) {
      uint64_t n = std::min<uint64_t>(4096, bsize - off);
      if ((off / 4096) % 2) {
        std::fill_n(backing_.begin() + off, n, 0);
      } else {
        ASSERT_OK(loop_->run((*b)->write(off, backing_.data() + off, n)));
      }
    }
    ASSERT_OK(loop_->run((*b)->close()));
    o.backing_file = "base.qcow2";
    o.backing_format = "qcow2";
  }

  Config c_;
  std::unique_ptr<IoLoop> loop_;
  test::OverlayFs fs_;
  std::vector<uint8_t> initial_;
  std::vector<uint8_t> backing_;
};

enum class CrashMode { kDropUnflushed, kKeepRandomSubset };

// After the cut: opens, checks, compares, writes once more, closes clean.
void verify_after_crash(Bench& b, const std::vector<Req>& reqs, const Config& c) {
  auto s = b.open();
  ASSERT_TRUE(s.has_value()) << "reopen after crash: " << s.error().to_string();
  auto r = b.loop().run(check_qcow2(b.file(), RepairMode::kNone));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  std::string msgs;
  for (size_t i = 0; i < r->messages.size() && i < 20; ++i) msgs += r->messages[i] + "\n";
  ASSERT_EQ(r->corruptions, 0u) << msgs;
  ASSERT_EQ(r->check_errors, 0u) << msgs;

  std::vector<uint8_t> got(c.size);
  ASSERT_OK(b.loop().run(b.drv->read(0, got.data(), got.size())));
  std::string bad = b.acceptor().check(reqs, got, /*durable_only=*/true);
  ASSERT_EQ(bad, "");

  // The recovered image keeps working: allocation after a crash must not hand out clusters that
  // are still in use.
  std::vector<uint8_t> more(3 * c.cluster_size / 2 + 5, 0xa5);
  ASSERT_OK(b.loop().run(b.drv->write(c.size / 3 + 7, more.data(), more.size())));
  ASSERT_OK(b.loop().run(b.drv->write_zeroes(c.size / 2, c.size / 4, {})));
  b.close();
  auto r2 = b.loop().run(check_qcow2(b.file(), RepairMode::kNone));
  ASSERT_TRUE(r2.has_value()) << r2.error().to_string();
  EXPECT_EQ(r2->corruptions, 0u);
  EXPECT_EQ(r2->check_errors, 0u);
}

struct RunResult {
  uint64_t mutating_ops = 0;
  size_t max_in_flight = 0;
};

// Runs the batch on a fresh image with the file failing from mutating op `cut` on (UINT64_MAX:
// never), crashes, and verifies.
RunResult run_and_cut(const Config& c, std::vector<Req> reqs, uint64_t cut, CrashMode mode,
                      uint64_t seed) {
  Bench b(c);
  RunResult res;
  if (!b.open()) {
    ADD_FAILURE() << "open";
    return res;
  }
  uint64_t ops0 = b.file().mutating_ops_seen();
  if (cut != UINT64_MAX) b.file().fail_from_op(cut);
  res.max_in_flight = test::run_concurrently(b.loop(), *b.drv, reqs);
  res.mutating_ops = b.file().mutating_ops_seen() - ops0;
  if (cut == UINT64_MAX) {
    for (const Req& r : reqs) EXPECT_TRUE(r.ok()) << "failed without a fault: " << describe(r);
  }
  b.file().stop_failing();
  if (mode == CrashMode::kDropUnflushed) {
    b.file().crash_drop_unflushed();
  } else {
    std::mt19937_64 rng(seed);
    b.file().crash_keep_random_subset(rng);
  }
  b.drv.reset();  // abandoned, as a crash leaves it
  SCOPED_TRACE(std::string("cut at file op ") + std::to_string(cut) +
               (mode == CrashMode::kDropUnflushed
                    ? " (unflushed dropped)"
                    : " (random subset kept, seed " + std::to_string(seed) + ")"));
  verify_after_crash(b, reqs, c);
  return res;
}

class Qcow2ConcurrentCrash : public ::testing::TestWithParam<Config> {};

// One batch, cut at (nearly) every mutating file op of its run, in both crash modes.
TEST_P(Qcow2ConcurrentCrash, ManyInFlightCutAnywhere) {
  const Config& c = GetParam();
  for (uint64_t round = 0; round < 2; ++round) {
    std::mt19937_64 rng(c.cluster_size * 31 + c.refcount_bits * 7 + c.version + c.lazy + round);
    auto reqs = test::make_batch(rng, c.size, c.cluster_size, 48, 24, 3);
    RunResult full = run_and_cut(c, reqs, UINT64_MAX, CrashMode::kDropUnflushed, 0);
    if (HasFatalFailure()) return;
    ASSERT_GE(full.max_in_flight, 16u) << "the batch must really run concurrently";
    uint64_t step = std::max<uint64_t>(1, full.mutating_ops / c.cuts);
    for (uint64_t cut = 0; cut <= full.mutating_ops; cut += step) {
      ASSERT_NO_FATAL_FAILURE(run_and_cut(c, reqs, cut, CrashMode::kDropUnflushed, 0));
      ASSERT_NO_FATAL_FAILURE(
          run_and_cut(c, reqs, cut + step / 2, CrashMode::kKeepRandomSubset, rng()));
    }
    ASSERT_NO_FATAL_FAILURE(run_and_cut(c, reqs, UINT64_MAX, CrashMode::kKeepRandomSubset, rng()));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Configs, Qcow2ConcurrentCrash,
    ::testing::Values(
        Config{"c512_rc16_v3", 512, 16, 3, false, 192 << 10},
        Config{"c512_rc64_lazy_l2evict", 512, 64, 3, true, 192 << 10, Backing::kNone, 2048},
        Config{"c512_rc1_l2evict", 512, 1, 3, false, 256 << 10, Backing::kNone, 2048},
        Config{"c512_v2", 512, 16, 2, false, 192 << 10},
        Config{"c4k_rc8", 4096, 8, 3, false, 512 << 10},
        Config{"c4k_rc16_lazy_raw_base", 4096, 16, 3, true, 512 << 10, Backing::kRaw},
        Config{"c4k_v2_qcow2_base", 4096, 16, 2, false, 512 << 10, Backing::kQcow2},
        Config{"c512_v2_qcow2_base_l2evict", 512, 16, 2, false, 192 << 10, Backing::kQcow2, 2048},
        // Big clusters: fewer, costlier cuts (every run compares the whole disk).
        Config{"c64k_rc16", 65536, 16, 3, false, 1 << 20, Backing::kNone, 0, 16},
        Config{"c64k_rc32_lazy_raw_base", 65536, 32, 3, true, 1 << 20, Backing::kRaw, 0, 16},
        Config{"c64k_v2_raw_base", 65536, 16, 2, false, 1 << 20, Backing::kRaw, 0, 16}),
    [](const auto& info) { return std::string(info.param.name); });

// --- Regressions found by the tests above ----------------------------------------------------

// Bug: a cluster freed by discard (or write_zeroes with unmap) went straight back to the
// allocator while the L2 table that stopped pointing at it was only dirty in the cache. The next
// allocating write wrote its data into the cluster at once; after a crash the old L2 entry still
// mapped the discarded guest cluster there, so it read another guest cluster's data (neither its
// old data nor zeros). With lazy refcounts (no cache dependencies) both L2 entries could reach
// the disk.
void freed_cluster_reused_then_crash(bool lazy, bool zero_unmap) {
  constexpr uint32_t kCluster = 4096;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = kCluster, .lazy_refcounts = lazy});
    std::vector<uint8_t> old(kCluster, 0x11), other(kCluster, 0x22);
    ASSERT_OK(loop->run(m.drv->write(0, old.data(), old.size())));
    ASSERT_OK(loop->run(m.drv->flush()));
    // Guest cluster 0 holds 0x11, durably. Free its host cluster, then allocate for another
    // guest cluster.
    if (zero_unmap) {
      ASSERT_OK(loop->run(m.drv->write_zeroes(0, kCluster, {.may_unmap = true})));
    } else {
      ASSERT_OK(loop->run(m.drv->discard(0, kCluster)));
    }
    ASSERT_OK(loop->run(m.drv->write(5 * kCluster, other.data(), other.size())));
    std::mt19937_64 rng(seed);
    m.fault_file().crash_keep_random_subset(rng);
    m.abandon();
    ASSERT_OK(m.open({}));
    std::vector<uint8_t> got(kCluster);
    ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
    bool was_old = got == old, zeros = got == std::vector<uint8_t>(kCluster, 0);
    ASSERT_TRUE(was_old || zeros) << "seed " << seed << ": discarded guest cluster 0 reads "
                                  << int(got[0]) << ", another cluster's data";
    m.close();
    test::expect_clean(*loop, m, /*allow_leaks=*/true);
  }
}

TEST(Qcow2ConcurrentCrashRegression, ClusterFreedByDiscardIsNotReusedBeforeItsL2EntryIsDurable) {
  freed_cluster_reused_then_crash(/*lazy=*/false, /*zero_unmap=*/false);
  freed_cluster_reused_then_crash(/*lazy=*/false, /*zero_unmap=*/true);
  freed_cluster_reused_then_crash(/*lazy=*/true, /*zero_unmap=*/false);
  freed_cluster_reused_then_crash(/*lazy=*/true, /*zero_unmap=*/true);
}

}  // namespace
}  // namespace img
