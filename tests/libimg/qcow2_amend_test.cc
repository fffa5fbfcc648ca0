// qcow2 amend (qcow2/amend*.cc) on images in memory:
//   - a refcount width change keeps every guest byte and the snapshot, and the image checks
//     clean with the new width (QEMU's check agrees: tests/img/amend_test.cc);
//   - a downgrade turns zero clusters into entries version 2 can say (check on a v2 image
//     flags the zero bit as reserved, so a clean check proves none is left);
//   - refusals leave the image as it was;
//   - crash safety: the file fails from every mutating operation of an amend in turn, the
//     machine crashes (unflushed writes dropped, or a random subset kept), and the image still
//     opens, checks without corruption (leaks allowed), reads the same, and is the old or the
//     new version.
#include <random>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "img/snapshot.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

constexpr uint64_t kSize = 256 << 10;
constexpr uint32_t kCluster = 512;  // many refcount blocks and L2 tables in a small image

// What the guest sees after fill(): a pattern, with [16k, 24k) and [100k, 104k) zeroed.
std::vector<uint8_t> expected() {
  std::vector<uint8_t> v(kSize, 0);
  for (uint64_t i = 0; i < 160 << 10; ++i) v[i] = static_cast<uint8_t>(i * 7 + i / 512 + 1);
  std::fill(v.begin() + (16 << 10), v.begin() + (24 << 10), 0);
  std::fill(v.begin() + (100 << 10), v.begin() + (104 << 10), 0);
  return v;
}

// Data, zero clusters over data (kept allocated) and over nothing, and optionally a snapshot
// (refcounts of 2), then closed and reopened so that everything is durable.
void fill(IoLoop& loop, test::MemImage& m, bool snapshot) {
  auto v = expected();
  std::vector<uint8_t> data(v.begin(), v.begin() + (160 << 10));
  for (uint64_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + i / 512 + 1);
  ASSERT_OK(loop.run(m.drv->write(0, data.data(), data.size())));
  ASSERT_OK(loop.run(m.drv->write_zeroes(16 << 10, 8 << 10, {.may_unmap = false})));
  ASSERT_OK(loop.run(m.drv->write_zeroes(100 << 10, 4 << 10, {.may_unmap = false})));
  ASSERT_OK(loop.run(m.drv->write_zeroes(200 << 10, 8 << 10, {.may_unmap = false})));
  if (snapshot) {
    auto sn = loop.run(create_snapshot(*m.drv, {.name = "s1"}));
    ASSERT_TRUE(sn.has_value()) << sn.error().to_string();
  }
  m.reopen();
}

void expect_reads(IoLoop& loop, BlockDriver& d) {
  std::vector<uint8_t> got(kSize);
  ASSERT_OK(loop.run(d.read(0, got.data(), got.size())));
  ASSERT_TRUE(got == expected()) << "guest data changed";
}

Qcow2Info info_of(IoLoop& loop, test::MemImage& m) {
  auto i = loop.run(read_qcow2_info(m.fault_file()));
  EXPECT_TRUE(i.has_value());
  return i ? *i : Qcow2Info{};
}

TEST(Qcow2Amend, RefcountWidthKeepsDataAndSnapshot) {
  for (uint32_t bits : {2u, 4u, 8u, 32u, 64u, 16u}) {
    SCOPED_TRACE("refcount_bits=" + std::to_string(bits));
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = kSize, .cluster_size = kCluster, .refcount_bits = 8});
    ASSERT_NO_FATAL_FAILURE(fill(*loop, m, true));
    ASSERT_OK(loop->run(amend_image(*m.drv, {.refcount_bits = bits}, nullptr)));
    // The amended driver keeps working: allocation through the new structure.
    std::vector<uint8_t> more(4096, 0x5a);
    ASSERT_OK(loop->run(m.drv->write(kSize - 4096, more.data(), more.size())));
    ASSERT_OK(loop->run(m.drv->write(kSize - 4096, more.data(), more.size())));
    m.reopen();
    EXPECT_EQ(info_of(*loop, m).refcount_bits, bits);
    EXPECT_EQ(info_of(*loop, m).nb_snapshots, 1u);
    std::vector<uint8_t> got(4096);
    ASSERT_OK(loop->run(m.drv->read(kSize - 4096, got.data(), got.size())));
    EXPECT_EQ(got, more);
    m.close();
    test::expect_clean(*loop, m, /*allow_leaks=*/false);
  }
}

TEST(Qcow2Amend, NarrowerThanARefcountIsRefusedAndChangesNothing) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = kSize, .cluster_size = kCluster});
  ASSERT_NO_FATAL_FAILURE(fill(*loop, m, true));
  std::vector<uint8_t> before = m.file_bytes();
  auto s = loop->run(amend_image(*m.drv, {.refcount_bits = 1}, nullptr));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("Cannot decrease refcount entry width to 1 bits: Cluster "
                                     "at offset 0x"),
            std::string::npos)
      << s.error().message();
  EXPECT_NE(s.error().message().find("has a refcount of 2"), std::string::npos);
  m.close();
  EXPECT_EQ(info_of(*loop, m).refcount_bits, 16u);
  test::expect_clean(*loop, m);
}

TEST(Qcow2Amend, DowngradeExpandsZeroClustersOfEveryL1Table) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = kSize, .cluster_size = kCluster, .lazy_refcounts = true});
  ASSERT_NO_FATAL_FAILURE(fill(*loop, m, true));
  // A write under lazy refcounts leaves the image dirty until close; the downgrade cleans it.
  std::vector<uint8_t> same(512);
  ASSERT_OK(loop->run(m.drv->read(0, same.data(), same.size())));
  ASSERT_OK(loop->run(m.drv->write(0, same.data(), same.size())));
  ASSERT_OK(loop->run(amend_image(*m.drv, {.version = 2}, nullptr)));
  m.reopen();
  Qcow2Info i = info_of(*loop, m);
  EXPECT_EQ(i.version, 2);
  EXPECT_FALSE(i.lazy_refcounts);
  EXPECT_FALSE(i.dirty);
  ASSERT_NO_FATAL_FAILURE(expect_reads(*loop, *m.drv));
  // The snapshot's view has the same zeros (they were taken before it).
  ASSERT_OK(loop->run(apply_snapshot(*m.drv, "s1")));
  ASSERT_NO_FATAL_FAILURE(expect_reads(*loop, *m.drv));
  m.close();
  test::expect_clean(*loop, m, /*allow_leaks=*/false);
}

TEST(Qcow2Amend, RefusalsInQemusWordsLeaveTheImageAsItWas) {
  struct Case {
    Qcow2CreateOptions create;
    Qcow2AmendOptions amend;
    const char* message;
  };
  const Case cases[] = {
      {{.refcount_bits = 8}, {.version = 2}, "compat=0.10 requires refcount_bits=16"},
      {{},
       {.version = 2, .lazy_refcounts = true},
       "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 "
       "or greater)"},
      {{.version = 2},
       {.refcount_bits = 8},
       "Refcount widths other than 16 bits require compatibility level 1.1 or above (use "
       "compat=1.1 or greater)"},
      {{},
       {.backing_file = "other.qcow2"},
       "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."},
      {{},
       {.data_file = "x.raw"},
       "data-file can only be set for images that use an external data file"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    auto loop = make_loop();
    Qcow2CreateOptions co = c.create;
    co.size = kSize;
    co.cluster_size = kCluster;
    test::MemImage m(*loop, co);
    ASSERT_NO_FATAL_FAILURE(fill(*loop, m, false));
    std::vector<uint8_t> before = m.file_bytes();
    auto s = loop->run(amend_image(*m.drv, c.amend, nullptr));
    ASSERT_FALSE(s.has_value());
    EXPECT_EQ(s.error().message(), c.message);
    m.close();
    EXPECT_EQ(m.file_bytes(), before);
  }
}

TEST(Qcow2Amend, OptionParsingInQemusWords) {
  auto msg = [](std::vector<std::string> o) {
    auto r = parse_amend_options("qcow2", o);
    return r ? std::string("ok") : r.error().message();
  };
  EXPECT_EQ(msg({"cluster_size=4096"}),
            "Invalid parameter 'cluster_size'\nThis option is only supported for image creation");
  EXPECT_EQ(msg({"foo=1"}), "Invalid parameter 'foo'");
  EXPECT_EQ(msg({"compat=2.0"}), "Unknown compatibility level 2.0");
  EXPECT_EQ(msg({"refcount_bits=128"}),
            "Refcount width must be a power of two and may not exceed 64 bits");
  EXPECT_EQ(msg({"refcount_bits=x"}), "Parameter 'refcount_bits' expects a number");
  EXPECT_EQ(msg({"lazy_refcounts=maybe"}), "Parameter 'lazy_refcounts' expects 'on' or 'off'");
  EXPECT_EQ(msg({""}), "Invalid option list: ");
  auto r = parse_amend_options("qcow2", {"compat=0.10", "compat=v3,lazy_refcounts,size=1M"});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->options.version, 3);  // the later value wins
  EXPECT_EQ(r->options.lazy_refcounts, true);
  EXPECT_EQ(r->options.size, 1u << 20);
}

// ---- crash safety ------------------------------------------------------------------------

struct CrashCase {
  const char* name;
  Qcow2CreateOptions create;
  Qcow2AmendOptions amend;
  int new_version;
  uint32_t new_bits;
};

uint64_t ops_of(const CrashCase& c) {
  auto loop = make_loop();
  test::MemImage m(*loop, c.create);
  fill(*loop, m, true);
  uint64_t before = m.fault_file().mutating_ops_seen();
  auto s = loop->run(amend_image(*m.drv, c.amend, nullptr));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  return m.fault_file().mutating_ops_seen() - before;
}

void cut_at(const CrashCase& c, uint64_t k, bool keep_random, uint64_t seed) {
  SCOPED_TRACE(std::string(c.name) + ": fails from op " + std::to_string(k) +
               (keep_random ? ", random subset of unflushed writes kept" : ", unflushed dropped"));
  auto loop = make_loop();
  test::MemImage m(*loop, c.create);
  ASSERT_NO_FATAL_FAILURE(fill(*loop, m, true));
  const int old_version = c.create.version;
  const uint32_t old_bits = c.create.refcount_bits;
  m.fault_file().fail_from_op(k);
  auto s = loop->run(amend_image(*m.drv, c.amend, nullptr));
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

  Qcow2Info i = info_of(*loop, m);
  EXPECT_TRUE(i.version == old_version || i.version == c.new_version) << i.version;
  EXPECT_TRUE(i.refcount_bits == old_bits || i.refcount_bits == c.new_bits) << i.refcount_bits;
  // check first, on the file as the crash left it (opening a dirty image repairs it).
  if (!i.dirty) {
    auto r = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
    ASSERT_OK(r);
    std::string msgs;
    for (size_t j = 0; j < r->messages.size() && j < 10; ++j) msgs += r->messages[j] + "\n";
    ASSERT_EQ(r->corruptions, 0u) << msgs;
    ASSERT_EQ(r->check_errors, 0u) << msgs;
  }
  auto o = m.open({});
  ASSERT_TRUE(o.has_value()) << "reopen after crash: " << o.error().to_string();
  ASSERT_NO_FATAL_FAILURE(expect_reads(*loop, *m.drv));
  std::vector<uint8_t> more(3000, 0x5a);
  ASSERT_OK(loop->run(m.drv->write(kSize - more.size(), more.data(), more.size())));
  m.close();
  test::expect_clean(*loop, m, /*allow_leaks=*/true);
}

class Qcow2AmendCrash : public ::testing::TestWithParam<CrashCase> {};

TEST_P(Qcow2AmendCrash, EveryCutPoint) {
  const CrashCase& c = GetParam();
  uint64_t n = ops_of(c);
  ASSERT_GT(n, 2u);
  for (uint64_t k = 0; k <= n; ++k) {
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, false, 0));
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, true, k * 31 + 7));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Qcow2AmendCrash,
    ::testing::Values(
        CrashCase{"refcount_16_to_4",
                  {.size = kSize, .cluster_size = kCluster},
                  {.refcount_bits = 4},
                  3,
                  4},
        CrashCase{
            "refcount_8_to_64_lazy",
            {.size = kSize, .cluster_size = kCluster, .refcount_bits = 8, .lazy_refcounts = true},
            {.refcount_bits = 64},
            3,
            64},
        CrashCase{"downgrade_lazy_zero_clusters",
                  {.size = kSize, .cluster_size = kCluster, .lazy_refcounts = true},
                  {.version = 2},
                  2,
                  16},
        CrashCase{"downgrade_to_16_bits",
                  {.size = kSize, .cluster_size = kCluster, .refcount_bits = 2},
                  {.version = 2, .refcount_bits = 16},
                  2,
                  16},
        CrashCase{"upgrade_lazy_4_bits",
                  {.size = kSize, .version = 2, .cluster_size = kCluster},
                  {.version = 3, .lazy_refcounts = true, .refcount_bits = 4},
                  3,
                  4}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
