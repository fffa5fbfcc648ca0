// check_qcow2 (libimg/src/qcow2/check*.cc) against qemu-img: images QEMU creates and writes must
// check clean with the same figures; refcounts corrupted or leaked at known offsets are reported
// as qemu-img reports them, and repair makes both checkers clean. Also crash-safety of the
// refcount rebuild on the fault-injecting file.

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "img/file.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2/format.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img {
namespace {

using test::json_count;
using test::run_tool;
using test::shell_quote;

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_all(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), b.size());
}

// Raw access to a qcow2 file's structures, for corrupting them on purpose.
struct RawImage {
  std::vector<uint8_t> b;
  uint64_t cs() const { return 1ull << load_be32(&b[20]); }
  uint32_t order() const { return load_be32(&b[4]) >= 3 ? load_be32(&b[96]) : 4; }
  uint64_t l1() const { return load_be64(&b[40]); }
  uint64_t data_offset(uint64_t l1_index, uint64_t l2_index) const {
    uint64_t l2 = load_be64(&b[l1() + 8 * l1_index]) & qcow2::kL1OffsetMask;
    return load_be64(&b[l2 + 8 * l2_index]) & qcow2::kL2OffsetMask;
  }
  uint8_t* refblock_for(uint64_t cluster) {
    uint64_t per = qcow2::refcount_block_entries(load_be32(&b[20]), order());
    uint64_t rt = load_be64(&b[48]);
    return &b[load_be64(&b[rt + 8 * (cluster / per)])];
  }
  uint64_t per_block() const { return qcow2::refcount_block_entries(load_be32(&b[20]), order()); }
  void set_rc(uint64_t cluster, uint64_t v) {
    qcow2::set_refcount(refblock_for(cluster), cluster % per_block(), order(), v);
  }
};

class CheckTest : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }

  std::string path(const std::string& name) { return dir_.file(name); }

  void sh(const std::string& cmd) {
    auto r = run_tool(cmd);
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  }

  CheckResult check(const std::string& p, RepairMode mode = RepairMode::kNone) {
    auto f = open_host_file(*loop_, p, {.read_only = mode == RepairMode::kNone});
    EXPECT_TRUE(f.has_value());
    if (!f) return {};
    auto r = loop_->run(check_qcow2(**f, mode));
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r.value_or(CheckResult{});
  }

  // libimg's figures must equal qemu-img check's.
  void expect_same_as_qemu(const std::string& p, const CheckResult& r, int qemu_exit) {
    auto q = run_tool("qemu-img check --output=json -f qcow2 " + shell_quote(p));
    EXPECT_EQ(q.exit_code, qemu_exit) << q.output;
    EXPECT_EQ(json_count(q.output, "corruptions"), r.corruptions) << q.output;
    EXPECT_EQ(json_count(q.output, "leaks"), r.leaks) << q.output;
    EXPECT_EQ(json_count(q.output, "check-errors"), r.check_errors) << q.output;
    EXPECT_EQ(json_count(q.output, "image-end-offset"), r.image_end_offset) << q.output;
    EXPECT_EQ(json_count(q.output, "total-clusters"), r.total_clusters) << q.output;
    EXPECT_EQ(json_count(q.output, "allocated-clusters"), r.allocated_clusters) << q.output;
    EXPECT_EQ(json_count(q.output, "fragmented-clusters"), r.fragmented_clusters) << q.output;
    EXPECT_EQ(json_count(q.output, "compressed-clusters"), r.compressed_clusters) << q.output;
  }

  void expect_clean(const std::string& p) {
    CheckResult r = check(p);
    EXPECT_EQ(r.corruptions + r.leaks + r.check_errors, 0u);
    for (const auto& m : r.messages) ADD_FAILURE() << m;
    expect_same_as_qemu(p, r, 0);
  }

  static bool has_message(const CheckResult& r, const std::string& m) {
    for (const auto& s : r.messages) {
      if (s == m) return true;
    }
    return false;
  }

  // A default image with 1 MiB of data at 0; returns its path.
  std::string written_image(const std::string& opts = "") {
    std::string p = path("w.qcow2");
    sh("qemu-img create -q -f qcow2 " + (opts.empty() ? "" : "-o " + opts + " ") +
       shell_quote(p) + " 16M");
    sh("qemu-io -f qcow2 -c 'write -P 0xab 0 1M' " + shell_quote(p));
    return p;
  }

  std::unique_ptr<IoLoop> loop_ = test::make_loop();
  test::TempDir dir_;
};

TEST_F(CheckTest, QemuWrittenImagesAreClean) {
  const char* opts[] = {"",
                        "compat=0.10",
                        "refcount_bits=1",
                        "refcount_bits=64",
                        "cluster_size=512",
                        "cluster_size=2M",
                        "preallocation=metadata",
                        "lazy_refcounts=on",
                        "compression_type=zstd",
                        "extended_l2=on",
                        "cluster_size=4096,refcount_bits=2"};
  int i = 0;
  for (const char* o : opts) {
    SCOPED_TRACE(o);
    std::string p = path("q" + std::to_string(i++) + ".qcow2");
    sh(std::string("qemu-img create -q -f qcow2 ") + (*o ? std::string("-o ") + o + " " : "") +
       shell_quote(p) + " 64M");
    sh("qemu-io -f qcow2 -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 5M 300k' "
       "-c 'write -z 10M 1M' -c 'write -P 1 40M 4k' -c 'discard 0 64k' -c 'write 20M 2M' " +
       shell_quote(p));
    expect_clean(p);
  }
}

TEST_F(CheckTest, CompressedClustersCounted) {
  std::string raw = path("src.raw"), p = path("c.qcow2");
  sh("qemu-img create -q -f raw " + shell_quote(raw) + " 8M");
  sh("qemu-io -f raw -c 'write -P 0x11 0 3M' -c 'write -P 0x22 5M 1M' " + shell_quote(raw));
  for (const char* o : {"cluster_size=65536", "cluster_size=4096", "compression_type=zstd"}) {
    SCOPED_TRACE(o);
    sh(std::string("qemu-img convert -c -O qcow2 -o ") + o + " " + shell_quote(raw) + " " +
       shell_quote(p));
    CheckResult r = check(p);
    EXPECT_GT(r.compressed_clusters, 0u);
    expect_clean(p);
  }
}

TEST_F(CheckTest, SnapshotsSharedClusters) {
  std::string p = written_image();
  sh("qemu-img snapshot -c s1 " + shell_quote(p));
  sh("qemu-io -f qcow2 -c 'write -P 0x33 512k 1M' " + shell_quote(p));
  sh("qemu-img snapshot -c s2 " + shell_quote(p));
  sh("qemu-io -f qcow2 -c 'write -P 0x44 8M 64k' " + shell_quote(p));
  expect_clean(p);
}

TEST_F(CheckTest, RefcountTooLowReportedAndRebuilt) {
  std::string p = written_image();
  RawImage img{read_all(p)};
  uint64_t data = img.data_offset(0, 0) / img.cs();
  img.set_rc(data, 0);
  write_all(p, img.b);

  CheckResult r = check(p);
  EXPECT_TRUE(has_message(r, "ERROR cluster " + std::to_string(data) + " refcount=0 reference=1"));
  EXPECT_EQ(r.corruptions, 2u);  // the refcount, and OFLAG_COPIED on the L2 entry
  expect_same_as_qemu(p, r, 2);

  // As qemu-img 7.2: -r leaks cannot fix a referenced cluster without refcount ("ERROR need to
  // rebuild refcount structures", check failed) and changes nothing.
  {
    auto f = open_host_file(*loop_, p, {.read_only = false});
    ASSERT_TRUE(f.has_value());
    auto leaks_only = loop_->run(check_qcow2(**f, RepairMode::kLeaks));
    ASSERT_FALSE(leaks_only.has_value());
    EXPECT_NE(leaks_only.error().message().find("need to rebuild"), std::string::npos);
    std::string copy = p + ".copy";
    sh("cp " + shell_quote(p) + " " + shell_quote(copy));
    EXPECT_EQ(run_tool("qemu-img check -r leaks " + shell_quote(copy)).exit_code, 1);
    EXPECT_EQ(check(p).corruptions, 2u);
  }

  CheckResult fixed = check(p, RepairMode::kAll);
  EXPECT_EQ(fixed.corruptions, 0u);
  EXPECT_EQ(fixed.leaks, 0u);
  EXPECT_GE(fixed.corruptions_fixed, 1u);
  expect_clean(p);
  sh("qemu-io -f qcow2 -c 'read -P 0xab 0 1M' " + shell_quote(p));
}

TEST_F(CheckTest, LeakReportedAndFreed) {
  std::string p = written_image();
  RawImage img{read_all(p)};
  uint64_t leaked = img.b.size() / img.cs();  // one cluster past the end, then grown into
  img.b.resize(img.b.size() + img.cs());
  img.set_rc(leaked, 1);
  write_all(p, img.b);

  CheckResult r = check(p);
  EXPECT_EQ(r.leaks, 1u);
  EXPECT_EQ(r.corruptions, 0u);
  EXPECT_TRUE(has_message(r, "Leaked cluster " + std::to_string(leaked) + " refcount=1 reference=0"));
  expect_same_as_qemu(p, r, 3);

  CheckResult fixed = check(p, RepairMode::kLeaks);
  EXPECT_EQ(fixed.leaks_fixed, 1u);
  EXPECT_EQ(fixed.leaks, 0u);
  expect_clean(p);
}

TEST_F(CheckTest, RefcountTooHighIsLeakAndCopiedError) {
  for (const char* o : {"refcount_bits=16", "refcount_bits=2", "compat=0.10"}) {
    SCOPED_TRACE(o);
    std::string p = written_image(o);
    RawImage img{read_all(p)};
    uint64_t data = img.data_offset(0, 3) / img.cs();
    img.set_rc(data, 2);
    write_all(p, img.b);
    CheckResult r = check(p);
    EXPECT_EQ(r.leaks, 1u);
    EXPECT_EQ(r.corruptions, 1u);  // OFLAG_COPIED set on a cluster with refcount 2
    expect_same_as_qemu(p, r, 2);
    CheckResult fixed = check(p, RepairMode::kAll);
    EXPECT_EQ(fixed.leaks_fixed, 1u);
    EXPECT_EQ(fixed.corruptions + fixed.leaks, 0u);
    expect_clean(p);
  }
}

TEST_F(CheckTest, CopiedFlagMissingRepaired) {
  std::string p = written_image();
  RawImage img{read_all(p)};
  uint64_t l2 = load_be64(&img.b[img.l1()]) & qcow2::kL1OffsetMask;
  store_be64(&img.b[img.l1()], l2);  // L1 entry without COPIED
  uint64_t e = load_be64(&img.b[l2 + 8]);
  store_be64(&img.b[l2 + 8], e & ~qcow2::kOflagCopied);
  write_all(p, img.b);
  CheckResult r = check(p);
  EXPECT_EQ(r.corruptions, 2u);
  expect_same_as_qemu(p, r, 2);
  CheckResult fixed = check(p, RepairMode::kAll);
  EXPECT_EQ(fixed.corruptions_fixed, 2u);
  expect_clean(p);
}

TEST_F(CheckTest, DirtyLazyImageRebuiltAndMarkedClean) {
  std::string p = written_image("lazy_refcounts=on");
  RawImage img{read_all(p)};
  // As after a crash with lazy refcounts: L2 entries written, refcounts not.
  for (uint64_t i = 0; i < 16; ++i) img.set_rc(img.data_offset(0, i) / img.cs(), 0);
  store_be64(&img.b[72], load_be64(&img.b[72]) | qcow2::kIncompatDirty);
  store_be64(&img.b[88], load_be64(&img.b[88]) | (1ull << 17));  // unknown autoclear bit
  write_all(p, img.b);

  auto f = open_host_file(*loop_, p, {});
  ASSERT_OK(f);
  auto r = loop_->run(check_qcow2(**f, RepairMode::kAll));
  ASSERT_OK(r);
  EXPECT_EQ(r->corruptions, 0u);
  EXPECT_GE(r->corruptions_fixed, 16u);
  auto info = loop_->run(read_qcow2_info(**f));
  ASSERT_OK(info);
  EXPECT_FALSE(info->dirty);
  EXPECT_TRUE(info->lazy_refcounts);
  f->reset();
  EXPECT_EQ(load_be64(&read_all(p)[88]), 0u);
  expect_clean(p);
  sh("qemu-io -f qcow2 -c 'read -P 0xab 0 1M' " + shell_quote(p));
}

TEST_F(CheckTest, HostileOffsetsAreFindingsNotAllocations) {
  std::string p = written_image();
  RawImage img{read_all(p)};
  // L1 entry pointing 1 TiB past the end; an L2 entry pointing 2^55.
  uint64_t l2 = load_be64(&img.b[img.l1()]) & qcow2::kL1OffsetMask;
  store_be64(&img.b[l2 + 16], (1ull << 55) | qcow2::kOflagCopied);
  store_be64(&img.b[img.l1() + 8], (1ull << 40) | qcow2::kOflagCopied);
  write_all(p, img.b);
  CheckResult r = check(p);
  EXPECT_GE(r.corruptions, 2u);
  expect_same_as_qemu(p, r, 2);
}

// Crash at every point of a rebuild: the image must stay checkable, and never get worse.
TEST_F(CheckTest, RebuildIsCrashSafe) {
  std::string p = written_image();
  RawImage img{read_all(p)};
  for (uint64_t i = 0; i < 4; ++i) img.set_rc(img.data_offset(0, i) / img.cs(), 0);
  const uint64_t before = 8;  // 4 refcounts + 4 COPIED flags
  for (uint64_t n = 0; n < 12; ++n) {
    SCOPED_TRACE(n);
    FaultFile f;
    f.bytes() = img.b;
    ASSERT_OK(loop_->run(f.flush()));
    f.fail_from_op(n);
    (void)loop_->run(check_qcow2(f, RepairMode::kAll));
    f.stop_failing();
    f.crash_drop_unflushed();
    auto r = loop_->run(check_qcow2(f, RepairMode::kNone));
    ASSERT_OK(r);
    EXPECT_EQ(r->check_errors, 0u);
    EXPECT_LE(r->corruptions, before);
    auto again = loop_->run(check_qcow2(f, RepairMode::kAll));
    ASSERT_OK(again);
    EXPECT_EQ(again->corruptions, 0u);
  }
}

}  // namespace
}  // namespace img
