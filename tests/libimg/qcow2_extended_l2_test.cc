// Extended L2 entries (qcow2.rst "Extended L2 Entries": 32 subclusters a cluster, an allocation
// and a zero bitmap), checked against the file and against QEMU 7.2: a write into a fresh
// overlay cluster copies from the backing image only the subclusters it touches partially and
// leaves the rest unallocated; zero writes set zero bits; qemu-io reads what libimg wrote and
// libimg reads what qemu-io wrote; hostile bitmaps get a clear error, and `img check` counts
// them as `qemu-img check` does.
#include <fstream>

#include "chain_interop.h"
#include "img/bytes.h"
#include "img/qcow2.h"

namespace img {
namespace {

constexpr uint64_t kK = 1024, kM = 1024 * 1024;

class ExtendedL2 : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }
  std::string f(const std::string& n) const { return dir_.file(n); }

  // A 1 MiB qcow2 base full of 0xaa, and an extended-L2 overlay (64 KiB clusters: 2 KiB
  // subclusters) made by qemu-img.
  void make_chain() {
    test::qemu_ok("qemu-img create -q -f qcow2 " + f("base.qcow2") + " 1M");
    test::qemu_io("qcow2", f("base.qcow2"), {"write -P 0xaa 0 1M"});
    test::qemu_ok("qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 " +
                  f("top.qcow2"));
  }

  // The 16-byte L2 entry of guest cluster i of an image whose first L2 table covers it.
  std::pair<uint64_t, uint64_t> l2_entry(const std::string& path, uint64_t i) {
    auto b = test::read_host_file(path);
    uint64_t l1 = load_be64(&b[40]);
    uint64_t l2 = load_be64(&b[l1]) & 0x00fffffffffffe00ull;
    if (l2 == 0 || l2 + 16 * i + 16 > b.size()) return {0, 0};
    return {load_be64(&b[l2 + 16 * i]), load_be64(&b[l2 + 16 * i + 8])};
  }
  void poke_l2(const std::string& path, uint64_t i, uint64_t entry, uint64_t bitmap) {
    auto b = test::read_host_file(path);
    uint64_t l2 = load_be64(&b[load_be64(&b[40])]) & 0x00fffffffffffe00ull;
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    uint8_t e[16];
    store_be64(e, entry);
    store_be64(e + 8, bitmap);
    io.seekp(static_cast<std::streamoff>(l2 + 16 * i));
    io.write(reinterpret_cast<const char*>(e), 16);
  }
  CheckResult libimg_check(const std::string& path) {
    auto file = open_host_file(*loop_, path, {.read_only = true});
    EXPECT_TRUE(file.has_value());
    auto r = loop_->run(check_qcow2(**file, RepairMode::kNone));
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? *r : CheckResult{};
  }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_F(ExtendedL2, WriteCopiesOnlyTouchedSubclustersFromTheBacking) {
  make_chain();
  {
    auto d = loop_->run(open_image(*loop_, f("top.qcow2"), {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    // 5 KiB .. 9 KiB: subclusters 2 (partly), 3 and 4 (partly) of cluster 0.
    std::vector<uint8_t> buf(4 * kK, 0x11);
    ASSERT_OK(loop_->run((*d)->write(5 * kK, buf.data(), buf.size())));
    // Subclusters 0 and 1 still read from the backing image.
    auto st = loop_->run((*d)->block_status(0, 64 * kK));
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->kind, BlockStatus::Kind::kBacking);
    EXPECT_EQ(st->length, 4 * kK);
    st = loop_->run((*d)->block_status(4 * kK, 60 * kK));
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->kind, BlockStatus::Kind::kData);
    EXPECT_EQ(st->length, 6 * kK);
    ASSERT_OK(loop_->run((*d)->close()));
  }
  auto [entry, bitmap] = l2_entry(f("top.qcow2"), 0);
  EXPECT_NE(entry & 0x00fffffffffffe00ull, 0u);
  EXPECT_EQ(bitmap, 0x1cu) << "only subclusters 2-4 allocated, no zero bits";
  test::expect_qemu_check_clean(f("top.qcow2"));
  test::qemu_io("qcow2", f("top.qcow2"),
                {"read -P 0xaa 0 5k", "read -P 0x11 5k 4k", "read -P 0xaa 9k 1015k"});
  // The copied parts of subclusters 2 and 4 hold the backing data in the file itself.
  auto raw = test::read_host_file(f("top.qcow2"));
  uint64_t host = entry & 0x00fffffffffffe00ull;
  EXPECT_EQ(raw[host + 4 * kK], 0xaa);
  EXPECT_EQ(raw[host + 10 * kK - 1], 0xaa);
}

TEST_F(ExtendedL2, ZeroWritesSetZeroBitsPerSubcluster) {
  make_chain();
  {
    auto d = loop_->run(open_image(*loop_, f("top.qcow2"), {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::vector<uint8_t> buf(64 * kK, 0x22);
    ASSERT_OK(loop_->run((*d)->write(0, buf.data(), buf.size())));
    // 3 KiB .. 11 KiB: zero bits for subclusters 2-4, zero bytes in 1 and 5.
    ASSERT_OK(loop_->run((*d)->write_zeroes(3 * kK, 8 * kK, {})));
    // Zeros over the backing image in a cluster without a host cluster: zero bits only.
    ASSERT_OK(loop_->run((*d)->write_zeroes(128 * kK, 4 * kK, {})));
    ASSERT_OK(loop_->run((*d)->close()));
  }
  auto [e0, b0] = l2_entry(f("top.qcow2"), 0);
  EXPECT_EQ(b0, (0x1cull << 32) | 0xffffffe3ull);
  auto [e2, b2] = l2_entry(f("top.qcow2"), 2);
  EXPECT_EQ(e2, 0u);
  EXPECT_EQ(b2, 0x3ull << 32);
  test::expect_qemu_check_clean(f("top.qcow2"));
  test::qemu_io("qcow2", f("top.qcow2"),
                {"read -P 0x22 0 3k", "read -P 0 3k 8k", "read -P 0x22 11k 53k",
                 "read -P 0xaa 64k 64k", "read -P 0 128k 4k", "read -P 0xaa 132k 892k"});
}

TEST_F(ExtendedL2, QemuIoWritesReadBackBitForBit) {
  make_chain();
  test::qemu_io("qcow2", f("top.qcow2"),
                {"write -P 0x31 1000 3000", "write -P 0x32 70k 2k", "write -z 100k 6k",
                 "write -P 0x33 200k 100k", "discard 256k 64k", "write -P 0x34 500k 1"});
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, f("top.qcow2")),
                    test::qemu_flat(f("top.qcow2"), f("scratch.raw")), "libimg read");
  test::expect_map_agrees_with_qemu(*loop_, f("top.qcow2"));
  CheckResult ours = libimg_check(f("top.qcow2"));
  auto theirs = test::qemu_ok("qemu-img check --output=json " + f("top.qcow2"));
  EXPECT_EQ(ours.corruptions, 0u);
  EXPECT_EQ(ours.allocated_clusters, test::json_count(theirs, "allocated-clusters"));
}

TEST_F(ExtendedL2, HostileBitmapsGetAClearErrorAndQemuImgChecksCounts) {
  make_chain();
  test::qemu_io("qcow2", f("top.qcow2"), {"write -P 0x41 0 4k", "write -P 0x42 64k 4k"});
  auto [e0, b0] = l2_entry(f("top.qcow2"), 0);
  auto [e1, b1] = l2_entry(f("top.qcow2"), 1);
  // Cluster 0: subcluster 1 both allocated and zero. Cluster 2: allocation bits without a host
  // cluster. Cluster 3: the zero flag of a standard entry on an unallocated one (meaningless
  // with extended L2: QEMU ignores it and reads the backing image).
  poke_l2(f("top.qcow2"), 0, e0, b0 | (0x2ull << 32));
  poke_l2(f("top.qcow2"), 2, 0, 0x1);
  poke_l2(f("top.qcow2"), 3, 1, 0);
  {
    auto d = loop_->run(open_image(*loop_, f("top.qcow2"), {.read_only = true}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::vector<uint8_t> buf(4 * kK);
    auto s = loop_->run((*d)->read(0, buf.data(), buf.size()));
    ASSERT_FALSE(s.has_value());
    EXPECT_NE(s.error().message().find("both allocated and zero"), std::string::npos)
        << s.error().message();
    s = loop_->run((*d)->read(128 * kK, buf.data(), buf.size()));
    ASSERT_FALSE(s.has_value());
    EXPECT_NE(s.error().message().find("without a host cluster"), std::string::npos);
    ASSERT_OK(loop_->run((*d)->read(192 * kK, buf.data(), buf.size())));
    EXPECT_EQ(buf[0], 0xaa);
    ASSERT_OK(loop_->run((*d)->read(64 * kK, buf.data(), buf.size())));
    EXPECT_EQ(buf[0], 0x42);
    (void)loop_->run((*d)->close());
  }
  test::ToolResult q = test::run_tool("qemu-img check --output=json " + f("top.qcow2"));
  CheckResult ours = libimg_check(f("top.qcow2"));
  EXPECT_EQ(ours.corruptions, test::json_count(q.output, "corruptions")) << q.output;
  EXPECT_EQ(ours.corruptions, 2u);
  // A compressed cluster with a bitmap: QEMU's check counts a corruption and does not count its
  // data as referenced (a leak then).
  poke_l2(f("top.qcow2"), 0, e0, b0);
  poke_l2(f("top.qcow2"), 2, 0, 0);
  poke_l2(f("top.qcow2"), 3, 0, 0);
  uint64_t host1 = e1 & 0x00fffffffffffe00ull;
  poke_l2(f("top.qcow2"), 1, (1ull << 62) | host1, 0x1);
  q = test::run_tool("qemu-img check --output=json " + f("top.qcow2"));
  ours = libimg_check(f("top.qcow2"));
  EXPECT_EQ(ours.corruptions, test::json_count(q.output, "corruptions")) << q.output;
  EXPECT_EQ(ours.leaks, test::json_count(q.output, "leaks")) << q.output;
  EXPECT_GE(ours.corruptions, 1u);
  auto d = loop_->run(open_image(*loop_, f("top.qcow2"), {.read_only = true}));
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  std::vector<uint8_t> buf(4 * kK);
  auto s = loop_->run((*d)->read(64 * kK, buf.data(), buf.size()));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("compressed cluster with a subcluster bitmap"),
            std::string::npos)
      << s.error().message();
  (void)loop_->run((*d)->close());
}

TEST_F(ExtendedL2, CreateRefusesWhatQemuImgRefuses) {
  auto file = open_host_file(*loop_, f("x.qcow2"), {.create = true});
  ASSERT_TRUE(file.has_value());
  auto s =
      loop_->run(create_qcow2(**file, {.size = kM, .cluster_size = 8192, .extended_l2 = true}));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("at least 16384 bytes"), std::string::npos);
  s = loop_->run(create_qcow2(**file, {.size = kM, .version = 2, .extended_l2 = true}));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("compatibility level 1.1"), std::string::npos);
  ASSERT_OK(loop_->run(create_qcow2(**file, {.size = kM, .extended_l2 = true})));
  auto info = test::qemu_ok("qemu-img info --output=json " + f("x.qcow2"));
  EXPECT_EQ(test::json_field(info, "extended-l2"), "true");
}

}  // namespace
}  // namespace img
