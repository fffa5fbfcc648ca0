// Backing chains: an overlay's unallocated clusters read from its backing image, partial writes
// copy the rest of the cluster up, zeros hide backing data, and chains that loop, run too deep
// or name missing files are refused with the chain in the error.
#include <gtest/gtest.h>

#include "img/bytes.h"
#include "img/image.h"
#include "img/qcow2.h"
#include "mem_fs.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::MemFs;

constexpr uint64_t kCs = 65536;

// A byte that depends on the offset and a layer tag, so any misplaced byte shows.
uint8_t pattern(uint64_t off, uint8_t tag) { return uint8_t((off * 7 + off / 4099) ^ tag); }

void fill_raw(MemFile& f, uint64_t size, uint8_t tag) {
  f.bytes().resize(size);
  for (uint64_t i = 0; i < size; ++i) f.bytes()[i] = pattern(i, tag);
}

void make_qcow2(IoLoop& loop, MemFs& fs, const std::string& path, uint64_t size,
                std::string backing = "", std::string backing_fmt = "", int version = 3) {
  MemFile& f = fs.create(path);
  Qcow2CreateOptions o{.size = size, .version = version, .cluster_size = kCs};
  o.backing_file = std::move(backing);
  o.backing_format = std::move(backing_fmt);
  auto s = loop.run(create_qcow2(f, o));
  ASSERT_TRUE(s.has_value()) << s.error().to_string();
}

Result<std::unique_ptr<BlockDriver>> open_top(IoLoop& loop, MemFs& fs, const std::string& path,
                                              OpenOptions o = {}) {
  o.opener = &fs;
  return loop.run(open_image(loop, path, o));
}

std::vector<uint8_t> read_all(IoLoop& loop, BlockDriver& d, uint64_t off, uint64_t len) {
  std::vector<uint8_t> buf(len, 0xee);
  auto s = loop.run(d.read(off, buf.data(), len));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  return buf;
}

std::vector<uint8_t> expected(uint64_t off, uint64_t len, uint8_t tag) {
  std::vector<uint8_t> v(len);
  for (uint64_t i = 0; i < len; ++i) v[i] = pattern(off + i, tag);
  return v;
}

TEST(Qcow2Chain, OverlayReadsBackingAndCopiesUpPartialWrites) {
  auto loop = make_loop();
  MemFs fs;
  fill_raw(fs.create("base.raw"), 1 << 20, 0x11);
  make_qcow2(*loop, fs, "ov.qcow2", 1 << 20, "base.raw", "raw");
  std::vector<uint8_t> base_before = fs.find("base.raw")->bytes();
  {
    auto d = open_top(*loop, fs, "ov.qcow2");
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    ASSERT_NE((*d)->backing(), nullptr);
    EXPECT_EQ(read_all(*loop, **d, 0, 1 << 20), expected(0, 1 << 20, 0x11));
    // 1000 bytes in the middle of cluster 2, and a write across clusters 4 and 5.
    std::vector<uint8_t> a(1000, 0xa1), b(kCs, 0xb2);
    ASSERT_OK(loop->run((*d)->write(2 * kCs + 3000, a.data(), a.size())));
    ASSERT_OK(loop->run((*d)->write(4 * kCs + kCs / 2, b.data(), b.size())));
    auto got = read_all(*loop, **d, 0, 1 << 20);
    auto want = expected(0, 1 << 20, 0x11);
    std::copy(a.begin(), a.end(), want.begin() + 2 * kCs + 3000);
    std::copy(b.begin(), b.end(), want.begin() + 4 * kCs + kCs / 2);
    EXPECT_EQ(got, want);
    ASSERT_OK(loop->run((*d)->close()));
  }
  EXPECT_EQ(fs.find("base.raw")->bytes(), base_before) << "the backing file is never written";
  EXPECT_EQ(fs.opens_for_write(), 1) << "only the overlay is opened for writing";
  auto r = loop->run(check_qcow2(*fs.find("ov.qcow2"), RepairMode::kNone));
  ASSERT_OK(r);
  EXPECT_EQ(r->corruptions + r->leaks, 0u);
  EXPECT_EQ(r->allocated_clusters, 3u) << "cluster 2 copied up, clusters 4 and 5 written";
}

TEST(Qcow2Chain, ThreeLevelsComposeTopDown) {
  auto loop = make_loop();
  MemFs fs;
  const uint64_t size = 8 * kCs;
  fill_raw(fs.create("base.raw"), size, 0x01);
  make_qcow2(*loop, fs, "mid1.qcow2", size, "base.raw", "raw");
  make_qcow2(*loop, fs, "mid2.qcow2", size, "mid1.qcow2", "qcow2");
  make_qcow2(*loop, fs, "top.qcow2", size, "mid2.qcow2", "");  // format probed
  auto want = expected(0, size, 0x01);
  // Each level writes its own range, the upper ones over the lower ones' too.
  const char* levels[] = {"mid1.qcow2", "mid2.qcow2", "top.qcow2"};
  for (int i = 0; i < 3; ++i) {
    auto d = open_top(*loop, fs, levels[i]);
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::vector<uint8_t> w(kCs + 100, uint8_t(0x40 + i));
    uint64_t at = uint64_t(i + 1) * kCs - 50;
    ASSERT_OK(loop->run((*d)->write(at, w.data(), w.size())));
    std::copy(w.begin(), w.end(), want.begin() + at);
    ASSERT_OK(loop->run((*d)->close()));
  }
  auto d = open_top(*loop, fs, "top.qcow2", {.read_only = true});
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_EQ(read_all(*loop, **d, 0, size), want);
  int depth = 0;
  for (BlockDriver* b = d->get(); b; b = b->backing()) ++depth;
  EXPECT_EQ(depth, 4);
}

TEST(Qcow2Chain, ShorterBackingReadsZerosPastItsEnd) {
  auto loop = make_loop();
  MemFs fs;
  const uint64_t bsize = 3 * kCs + 1000;  // ends inside a cluster
  fill_raw(fs.create("base.raw"), bsize, 0x22);
  make_qcow2(*loop, fs, "ov.qcow2", 8 * kCs, "base.raw", "raw");
  auto d = open_top(*loop, fs, "ov.qcow2");
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  auto want = expected(0, bsize, 0x22);
  want.resize(8 * kCs, 0);
  EXPECT_EQ(read_all(*loop, **d, 0, 8 * kCs), want);
  auto st = loop->run((*d)->block_status(0, 8 * kCs));
  ASSERT_OK(st);
  EXPECT_EQ(st->kind, BlockStatus::Kind::kBacking);
  EXPECT_EQ(st->length, bsize);
  st = loop->run((*d)->block_status(bsize, 8 * kCs - bsize));
  ASSERT_OK(st);
  EXPECT_EQ(st->kind, BlockStatus::Kind::kUnallocated);
  EXPECT_TRUE(st->reads_as_zero());
  // A partial write into the cluster the backing file ends in copies up only what it has.
  std::vector<uint8_t> w(10, 0x99);
  ASSERT_OK(loop->run((*d)->write(3 * kCs + 5, w.data(), w.size())));
  std::copy(w.begin(), w.end(), want.begin() + 3 * kCs + 5);
  EXPECT_EQ(read_all(*loop, **d, 0, 8 * kCs), want);
  ASSERT_OK(loop->run((*d)->close()));
}

TEST(Qcow2Chain, ZerosAndDiscardsHideBackingData) {
  for (int version : {2, 3}) {
    SCOPED_TRACE(version);
    auto loop = make_loop();
    MemFs fs;
    fill_raw(fs.create("base.raw"), 16 * kCs, 0x33);
    make_qcow2(*loop, fs, "ov.qcow2", 16 * kCs, "base.raw", "raw", version);
    auto d = open_top(*loop, fs, "ov.qcow2");
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    auto want = expected(0, 16 * kCs, 0x33);
    auto zero = [&](uint64_t off, uint64_t len) {
      std::fill(want.begin() + off, want.begin() + off + len, 0);
    };
    // Unallocated clusters with no L2 table yet, then ones with a table, then allocated ones.
    ASSERT_OK(loop->run((*d)->write_zeroes(1 * kCs, 2 * kCs, {})));
    zero(1 * kCs, 2 * kCs);
    ASSERT_OK(loop->run((*d)->write_zeroes(3 * kCs + 100, kCs, {.may_unmap = true})));
    zero(3 * kCs + 100, kCs);
    std::vector<uint8_t> w(2 * kCs, 0x5c);
    ASSERT_OK(loop->run((*d)->write(6 * kCs, w.data(), w.size())));
    std::copy(w.begin(), w.end(), want.begin() + 6 * kCs);
    ASSERT_OK(loop->run((*d)->write_zeroes(6 * kCs, kCs, {.may_unmap = true})));
    zero(6 * kCs, kCs);
    ASSERT_OK(loop->run((*d)->write_zeroes(7 * kCs, kCs, {})));
    zero(7 * kCs, kCs);
    EXPECT_EQ(read_all(*loop, **d, 0, 16 * kCs), want);
    if (version == 3) {
      // Discard on version 3 reads as zeros too (zero flag); on version 2 the backing data may
      // show through, as with QEMU.
      ASSERT_OK(loop->run((*d)->discard(10 * kCs, 2 * kCs)));
      zero(10 * kCs, 2 * kCs);
      EXPECT_EQ(read_all(*loop, **d, 0, 16 * kCs), want);
      auto st = loop->run((*d)->block_status(10 * kCs, 2 * kCs));
      ASSERT_OK(st);
      EXPECT_EQ(st->kind, BlockStatus::Kind::kZero);
    }
    ASSERT_OK(loop->run((*d)->close()));
    auto again = open_top(*loop, fs, "ov.qcow2", {.read_only = true});
    ASSERT_TRUE(again.has_value()) << again.error().to_string();
    EXPECT_EQ(read_all(*loop, **again, 0, 16 * kCs), want);
    auto r = loop->run(check_qcow2(*fs.find("ov.qcow2"), RepairMode::kNone));
    ASSERT_OK(r);
    EXPECT_EQ(r->corruptions + r->leaks, 0u);
  }
}

TEST(Qcow2Chain, RelativeNamesResolveAgainstTheOverlaysFolder) {
  auto loop = make_loop();
  MemFs fs;
  fill_raw(fs.create("images/base.raw"), 4 * kCs, 0x44);
  make_qcow2(*loop, fs, "images/vm/ov.qcow2", 4 * kCs, "../base.raw", "raw");
  auto d = open_top(*loop, fs, "images/vm/ov.qcow2");
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_EQ(read_all(*loop, **d, 0, 4 * kCs), expected(0, 4 * kCs, 0x44));
  EXPECT_EQ(combine_backing_path("images/vm/ov.qcow2", "../base.raw"), "images/vm/../base.raw");
  EXPECT_EQ(combine_backing_path("ov.qcow2", "base.raw"), "base.raw");
  EXPECT_EQ(combine_backing_path("/a/ov.qcow2", "/b/base.raw"), "/b/base.raw");
}

TEST(Qcow2Chain, LoopIsRefusedWithTheChain) {
  auto loop = make_loop();
  MemFs fs;
  make_qcow2(*loop, fs, "a.qcow2", kCs, "b.qcow2", "qcow2");
  make_qcow2(*loop, fs, "b.qcow2", kCs, "./a.qcow2", "qcow2");
  auto d = open_top(*loop, fs, "a.qcow2");
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("loop"), std::string::npos) << d.error().message();
  EXPECT_NE(d.error().message().find("a.qcow2 -> b.qcow2 -> ./a.qcow2"), std::string::npos)
      << d.error().message();
  make_qcow2(*loop, fs, "self.qcow2", kCs, "self.qcow2", "qcow2");
  EXPECT_FALSE(open_top(*loop, fs, "self.qcow2").has_value());
}

TEST(Qcow2Chain, OverDeepChainIsRefused) {
  auto loop = make_loop();
  MemFs fs;
  fill_raw(fs.create("l0"), kCs, 0);
  for (int i = 1; i <= 66; ++i) {
    make_qcow2(*loop, fs, "l" + std::to_string(i), kCs, "l" + std::to_string(i - 1),
               i == 1 ? "raw" : "qcow2");
  }
  auto ok = open_top(*loop, fs, "l64");  // 64 images below the top: the default limit
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  auto deep = open_top(*loop, fs, "l65");
  ASSERT_FALSE(deep.has_value());
  EXPECT_NE(deep.error().message().find("deeper than 64"), std::string::npos)
      << deep.error().message();
  auto limited = open_top(*loop, fs, "l3", {.max_chain_depth = 2});
  ASSERT_FALSE(limited.has_value());
  EXPECT_NE(limited.error().message().find("l3 -> l2 -> l1 -> l0"), std::string::npos)
      << limited.error().message();
}

TEST(Qcow2Chain, MissingBackingFileNamesTheChain) {
  auto loop = make_loop();
  MemFs fs;
  make_qcow2(*loop, fs, "mid.qcow2", kCs, "gone.raw", "raw");
  make_qcow2(*loop, fs, "top.qcow2", kCs, "mid.qcow2", "qcow2");
  auto d = open_top(*loop, fs, "top.qcow2");
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(d.error().message().find("top.qcow2 -> mid.qcow2 -> gone.raw"), std::string::npos)
      << d.error().message();
}

TEST(Qcow2Chain, RefusePolicyRejectsImagesWithBackingFiles) {
  auto loop = make_loop();
  MemFs fs;
  fill_raw(fs.create("base.raw"), kCs, 0);
  make_qcow2(*loop, fs, "ov.qcow2", kCs, "base.raw", "raw");
  auto d = open_top(*loop, fs, "ov.qcow2", {.backing = BackingPolicy::kRefuse});
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("backing files are refused"), std::string::npos);
  make_qcow2(*loop, fs, "plain.qcow2", kCs);
  EXPECT_TRUE(open_top(*loop, fs, "plain.qcow2", {.backing = BackingPolicy::kRefuse}));
}

TEST(Qcow2Chain, ManyConcurrentCopyUpsOfOneCluster) {
  // Dozens of small writes into one unallocated cluster at once: one copy-up wins, the others
  // land on top of it, and nothing of the backing data is lost around them.
  auto loop = make_loop();
  MemFs fs(loop.get());
  fill_raw(fs.create("base.raw"), 4 * kCs, 0x55);
  make_qcow2(*loop, fs, "ov.qcow2", 4 * kCs, "base.raw", "raw");
  auto d = open_top(*loop, fs, "ov.qcow2");
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  auto want = expected(0, 4 * kCs, 0x55);
  std::vector<std::vector<uint8_t>> bufs;
  for (int i = 0; i < 32; ++i) bufs.emplace_back(512, uint8_t(i + 1));
  for (int i = 0; i < 32; ++i) {
    uint64_t at = kCs + uint64_t(i) * 2048;
    loop->spawn([](BlockDriver* d, uint64_t off, std::vector<uint8_t>* b) -> Task<void> {
      auto s = co_await d->write(off, b->data(), b->size());
      EXPECT_TRUE(s.has_value()) << s.error().to_string();
    }(d->get(), at, &bufs[i]));
    std::copy(bufs[i].begin(), bufs[i].end(), want.begin() + at);
  }
  loop->drain();
  EXPECT_EQ(read_all(*loop, **d, 0, 4 * kCs), want);
  ASSERT_OK(loop->run((*d)->close()));
}

}  // namespace
}  // namespace img
