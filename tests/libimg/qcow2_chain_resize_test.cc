// Resizing an overlay whose backing file is longer than the overlay's old size: the grown part
// must read as zeros, never as the backing file's data (QEMU 7.2's bdrv_co_truncate asks
// qcow2_co_truncate for BDRV_REQ_ZERO_WRITE then, and it writes zero clusters over the grown
// part; version 2 images, which have no zero clusters, are refused). In memory first, then on
// real files side by side with `qemu-img resize`.
#include <filesystem>

#include "chain_interop.h"
#include "img/qcow2.h"
#include "mem_fs.h"

namespace img {
namespace {

using test::MemFs;
using test::shell_quote;

constexpr uint64_t kCs = 65536;

uint8_t pattern(uint64_t off) { return uint8_t((off * 13 + off / 5003) | 1); }  // never 0

struct MemChain {
  std::unique_ptr<IoLoop> loop = test::make_loop();
  MemFs fs;
  std::unique_ptr<BlockDriver> top;

  // A raw backing file of backing_size pattern bytes under a qcow2 overlay of ov_size.
  MemChain(uint64_t backing_size, uint64_t ov_size, int version = 3) {
    MemFile& b = fs.create("base.raw");
    b.bytes().resize(backing_size);
    for (uint64_t i = 0; i < backing_size; ++i) b.bytes()[i] = pattern(i);
    MemFile& f = fs.create("ov.qcow2");
    Qcow2CreateOptions o{.size = ov_size, .version = version, .cluster_size = kCs};
    o.backing_file = "base.raw";
    o.backing_format = "raw";
    EXPECT_OK(loop->run(create_qcow2(f, o)));
    reopen();
  }
  void reopen() {
    if (top) EXPECT_OK(loop->run(top->close()));
    auto d = loop->run(open_image(*loop, "ov.qcow2", {.opener = &fs}));
    EXPECT_TRUE(d.has_value()) << d.error().to_string();
    top = d ? std::move(*d) : nullptr;
  }
  std::vector<uint8_t> read(uint64_t off, uint64_t len) {
    std::vector<uint8_t> v(len, 0xee);
    EXPECT_OK(loop->run(top->read(off, v.data(), len)));
    return v;
  }
  // The bytes before `from` come from the backing file, the rest are zeros.
  void expect_backing_then_zeros(uint64_t from) {
    auto got = read(0, top->size());
    for (uint64_t i = 0; i < got.size(); ++i) {
      uint8_t want = i < from ? pattern(i) : 0;
      if (got[i] != want) {
        ADD_FAILURE() << "byte " << i << " is " << int(got[i]) << ", want " << int(want);
        return;
      }
    }
  }
};

TEST(Qcow2ChainResize, GrowOverALongerBackingFileReadsZerosInTheGrownPart) {
  for (Preallocation p : {Preallocation::kOff, Preallocation::kMetadata}) {
    SCOPED_TRACE(static_cast<int>(p));
    const uint64_t old = kCs + 512;  // ends inside a cluster
    MemChain c(6 * kCs, old);
    ASSERT_TRUE(c.top);
    ASSERT_OK(c.loop->run(c.top->resize(5 * kCs + 1024, {.preallocation = p})));
    c.expect_backing_then_zeros(old);
    auto st = c.loop->run(c.top->block_status(2 * kCs, 3 * kCs));
    ASSERT_OK(st);
    EXPECT_NE(st->kind, BlockStatus::Kind::kBacking);
    c.reopen();
    c.expect_backing_then_zeros(old);
  }
}

TEST(Qcow2ChainResize, ShrinkThenGrowDoesNotBringTheBackingDataBack) {
  MemChain c(4 * kCs, 4 * kCs);
  ASSERT_TRUE(c.top);
  ASSERT_OK(c.loop->run(c.top->resize(kCs + 4096, {.allow_shrink = true})));
  ASSERT_OK(c.loop->run(c.top->resize(4 * kCs, {})));
  c.expect_backing_then_zeros(kCs + 4096);
}

TEST(Qcow2ChainResize, GrowPastAShorterBackingFileNeedsNoZeros) {
  MemChain c(kCs, 2 * kCs);
  ASSERT_TRUE(c.top);
  ASSERT_OK(c.loop->run(c.top->resize(4 * kCs, {})));
  c.expect_backing_then_zeros(kCs);
  auto st = c.loop->run(c.top->block_status(2 * kCs, 2 * kCs));
  ASSERT_OK(st);
  EXPECT_EQ(st->kind, BlockStatus::Kind::kUnallocated);  // nothing written
}

TEST(Qcow2ChainResize, Version2GrowOverALongerBackingFileIsRefusedAsQemuDoes) {
  const uint64_t old = kCs + 512;
  MemChain c(6 * kCs, old, /*version=*/2);
  ASSERT_TRUE(c.top);
  auto s = c.loop->run(c.top->resize(4 * kCs, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotSupported);
  EXPECT_NE(s.error().message().find("Failed to zero out new clusters"), std::string::npos)
      << s.error().to_string();
  EXPECT_EQ(c.top->size(), old);
  c.reopen();
  EXPECT_EQ(c.top->size(), old);
  // Inside the cluster the old end lies in, zero bytes do it (QEMU writes them too).
  ASSERT_OK(c.loop->run(c.top->resize(2 * kCs, {})));
  c.expect_backing_then_zeros(old);
}

// --- side by side with qemu-img resize on real files -------------------------------------------

class ChainResizeInterop : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }
  // base.qcow2 (4 MiB of data) under ov.qcow2 of ov_size; then copies q.qcow2 and l.qcow2 of
  // ov.qcow2 for qemu-img and libimg to resize.
  void make(uint64_t ov_size, const std::string& compat) {
    test::qemu_ok("qemu-img create -q -f qcow2 " + shell_quote(file("base.qcow2")) + " 4M");
    test::qemu_io("qcow2", file("base.qcow2"), {"write -P 0x3c 0 4M"});
    test::qemu_ok("qemu-img create -q -f qcow2 -o compat=" + compat + " -b base.qcow2 -F qcow2 " +
                  shell_quote(file("ov.qcow2")) + " " + std::to_string(ov_size));
    test::qemu_io("qcow2", file("ov.qcow2"), {"write -P 0x77 1000 70000"});
    std::filesystem::copy_file(file("ov.qcow2"), file("q.qcow2"));
    std::filesystem::copy_file(file("ov.qcow2"), file("l.qcow2"));
  }
  std::string file(const std::string& n) const { return dir_.file(n); }
  test::ToolResult qemu_resize(const std::string& opts, const std::string& size) {
    return test::run_tool("qemu-img resize " + opts + " " + shell_quote(file("q.qcow2")) + " " +
                          size);
  }
  Status libimg_resize(uint64_t size, bool shrink, Preallocation p = Preallocation::kOff) {
    auto d = loop_->run(open_image(*loop_, file("l.qcow2"), {}));
    if (!d) return Unexpected(std::move(d).error());
    Status s = loop_->run((*d)->resize(size, {.preallocation = p, .allow_shrink = shrink}));
    Status c = loop_->run((*d)->close());
    return s ? c : s;
  }
  void expect_same_result() {
    auto want = test::qemu_flat(file("q.qcow2"), file("flat.raw"));
    EXPECT_SAME_BYTES(test::qemu_flat(file("l.qcow2"), file("flat.raw")), want,
                      "qemu-img convert of libimg's resize");
    EXPECT_SAME_BYTES(test::libimg_flat(*loop_, file("l.qcow2")), want, "libimg read");
    test::expect_qemu_check_clean(file("l.qcow2"));
  }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_F(ChainResizeInterop, GrowMatchesQemuImgResize) {
  make(1 * 1024 * 1024 + 512, "1.1");
  auto r = qemu_resize("", "3M");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_OK(libimg_resize(3 << 20, false));
  expect_same_result();
  auto flat = test::qemu_flat(file("l.qcow2"), file("flat.raw"));
  ASSERT_EQ(flat.size(), 3u << 20);
  EXPECT_EQ(flat[2 << 20], 0);  // the backing file's 0x3c does not show
}

TEST_F(ChainResizeInterop, GrowWithPreallocationMatchesQemuImgResize) {
  for (auto [name, mode] : {std::pair{"metadata", Preallocation::kMetadata},
                            std::pair{"falloc", Preallocation::kFalloc}}) {
    SCOPED_TRACE(name);
    make(1 * 1024 * 1024 + 512, "1.1");
    auto r = qemu_resize(std::string("--preallocation=") + name, "3M");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_OK(libimg_resize(3 << 20, false, mode));
    expect_same_result();
    for (const char* f : {"base.qcow2", "ov.qcow2", "q.qcow2", "l.qcow2"}) {
      std::filesystem::remove(file(f));
    }
  }
}

TEST_F(ChainResizeInterop, ShrinkThenGrowMatchesQemuImgResize) {
  make(4 << 20, "1.1");
  auto r = qemu_resize("--shrink", "1000K");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = qemu_resize("", "4M");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_OK(libimg_resize(1000 * 1024, true));
  ASSERT_OK(libimg_resize(4 << 20, false));
  expect_same_result();
}

TEST_F(ChainResizeInterop, Version2GrowIsRefusedLikeQemuImg) {
  make(1000 * 1024, "0.10");
  auto r = qemu_resize("", "3M");
  ASSERT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Failed to zero out new clusters"), std::string::npos) << r.output;
  Status s = libimg_resize(3 << 20, false);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("Failed to zero out new clusters"), std::string::npos)
      << s.error().to_string();
  expect_same_result();  // both unchanged
}

}  // namespace
}  // namespace img
