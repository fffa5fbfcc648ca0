// The part a qcow2 grow adds reads as zeros whatever lies under it: a backing file larger than
// the old size (QEMU 7.2's bdrv_co_truncate writes zero clusters over it, and refuses the grow on
// version 2, which has none), and the old bytes a compressed cluster keeps past an earlier
// shrink's end. Regressions found by the chain model test (qcow2_chain_model_test.cc).
#include <algorithm>
#include <random>
#include <vector>

#include "img/image.h"
#include "img/qcow2.h"
#include "mem_fs.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::MemFs;

constexpr uint64_t kCs = 65536;

std::vector<uint8_t> filled(uint64_t n, uint8_t tag) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = uint8_t((i * 7 + i / 509) ^ tag);
  return v;
}

std::vector<uint8_t> read_all(IoLoop& loop, BlockDriver& d, uint64_t off, uint64_t len) {
  std::vector<uint8_t> buf(len, 0xee);
  auto s = loop.run(d.read(off, buf.data(), len));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  return buf;
}

// Vectors of bytes, compared with the first difference named (not thousands of bytes printed).
void expect_same(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  auto m = std::mismatch(got.begin(), got.end(), want.begin());
  EXPECT_TRUE(m.first == got.end()) << "first difference at byte " << (m.first - got.begin())
                                    << ": got " << int(*m.first) << ", want " << int(*m.second);
}

// A raw base of base_size bytes of data under an empty qcow2 overlay of ov_size bytes.
struct Chain {
  Chain(uint64_t base_size, uint64_t ov_size, int version = 3) : loop(make_loop()) {
    base = filled(base_size, 0x5a);
    fs.create("base.raw").bytes() = base;
    Qcow2CreateOptions o{.size = ov_size, .version = version, .cluster_size = kCs};
    o.backing_file = "base.raw";
    o.backing_format = "raw";
    auto s = loop->run(create_qcow2(fs.create("ov.qcow2"), o));
    EXPECT_TRUE(s.has_value()) << s.error().to_string();
    open();
  }
  void open() {
    OpenOptions o;
    o.opener = &fs;
    auto d = loop->run(open_image(*loop, "ov.qcow2", o));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    drv = std::move(*d);
  }
  void reopen_and_check() {
    ASSERT_OK(loop->run(drv->close()));
    drv.reset();
    auto r = loop->run(check_qcow2(*fs.find("ov.qcow2"), RepairMode::kNone));
    ASSERT_OK(r);
    EXPECT_EQ(r->corruptions + r->leaks + r->check_errors, 0u);
    open();
  }
  // The base's bytes [0, n), zeros after them up to len.
  std::vector<uint8_t> base_then_zeros(uint64_t n, uint64_t len) const {
    std::vector<uint8_t> v(base.begin(), base.begin() + n);
    v.resize(len, 0);
    return v;
  }

  std::unique_ptr<IoLoop> loop;
  MemFs fs;
  std::vector<uint8_t> base;
  std::unique_ptr<BlockDriver> drv;
};

TEST(Qcow2ResizeZero, GrowOverALargerBackingFileHidesItsData) {
  Chain c(2 << 20, 1 << 20);
  ASSERT_OK(c.loop->run(c.drv->resize(3 << 20, {})));
  expect_same(read_all(*c.loop, *c.drv, 0, 3 << 20), c.base_then_zeros(1 << 20, 3 << 20));
  // Zero clusters over the backing data, as QEMU writes; past its end nothing is needed.
  auto st = c.loop->run(c.drv->block_status(1 << 20, 2 << 20));
  ASSERT_OK(st);
  EXPECT_EQ(st->kind, BlockStatus::Kind::kZero);
  EXPECT_GE(st->length, 1u << 20);
  c.reopen_and_check();
  expect_same(read_all(*c.loop, *c.drv, 0, 3 << 20), c.base_then_zeros(1 << 20, 3 << 20));
}

TEST(Qcow2ResizeZero, GrowFromAnEndInsideAClusterZerosTheRestOfIt) {
  // The old end lies inside an unallocated cluster whose head reads from the backing file.
  const uint64_t old = 5 * kCs + 1536;
  Chain c(2 << 20, old);
  ASSERT_OK(c.loop->run(c.drv->resize(6 * kCs + 512, {})));
  expect_same(read_all(*c.loop, *c.drv, 0, 6 * kCs + 512), c.base_then_zeros(old, 6 * kCs + 512));
  c.reopen_and_check();
  expect_same(read_all(*c.loop, *c.drv, 0, 6 * kCs + 512), c.base_then_zeros(old, 6 * kCs + 512));
  // A second grow from an end inside a cluster that now has data of its own.
  ASSERT_OK(c.loop->run(c.drv->resize(8 * kCs, {})));
  expect_same(read_all(*c.loop, *c.drv, 0, 8 * kCs), c.base_then_zeros(old, 8 * kCs));
  c.reopen_and_check();
}

TEST(Qcow2ResizeZero, ShrinkThenGrowDoesNotBringBackingDataBack) {
  Chain c(1 << 20, 1 << 20);
  std::vector<uint8_t> w(1000, 0x77);
  ASSERT_OK(c.loop->run(c.drv->write(100, w.data(), w.size())));
  ASSERT_OK(c.loop->run(c.drv->resize(300000 / 512 * 512, {.allow_shrink = true})));
  ASSERT_OK(c.loop->run(c.drv->resize(1 << 20, {})));
  auto want = c.base_then_zeros(300000 / 512 * 512, 1 << 20);
  std::copy(w.begin(), w.end(), want.begin() + 100);
  expect_same(read_all(*c.loop, *c.drv, 0, 1 << 20), want);
  c.reopen_and_check();
  expect_same(read_all(*c.loop, *c.drv, 0, 1 << 20), want);
}

TEST(Qcow2ResizeZero, PreallocatedGrowOverABackingFileReadsZeros) {
  for (Preallocation p : {Preallocation::kMetadata, Preallocation::kFalloc, Preallocation::kFull}) {
    SCOPED_TRACE(static_cast<int>(p));
    Chain c(2 << 20, kCs + 4096);
    ASSERT_OK(c.loop->run(c.drv->resize(1 << 20, {.preallocation = p})));
    expect_same(read_all(*c.loop, *c.drv, 0, 1 << 20), c.base_then_zeros(kCs + 4096, 1 << 20));
    c.reopen_and_check();
    expect_same(read_all(*c.loop, *c.drv, 0, 1 << 20), c.base_then_zeros(kCs + 4096, 1 << 20));
  }
}

TEST(Qcow2ResizeZero, Version2GrowOverALargerBackingFileIsRefusedAsQemuDoes) {
  // qemu-img 7.2: "Failed to zero out new clusters: Operation not supported", size unchanged.
  Chain c(2 << 20, 1 << 20, /*version=*/2);
  auto s = c.loop->run(c.drv->resize(2 << 20, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotSupported);
  EXPECT_EQ(c.drv->size(), 1u << 20);
  c.reopen_and_check();
  EXPECT_EQ(c.drv->size(), 1u << 20);
  expect_same(read_all(*c.loop, *c.drv, 0, 1 << 20), c.base_then_zeros(1 << 20, 1 << 20));
}

TEST(Qcow2ResizeZero, Version2GrowPastASmallerBackingFileWorks) {
  Chain c(100000, 1 << 20, /*version=*/2);
  ASSERT_OK(c.loop->run(c.drv->resize(2 << 20, {})));
  expect_same(read_all(*c.loop, *c.drv, 0, 2 << 20), c.base_then_zeros(100000, 2 << 20));
  c.reopen_and_check();
}

TEST(Qcow2ResizeZero, GrowAfterShrinkingIntoACompressedClusterReadsZeros) {
  for (int version : {2, 3}) {
    SCOPED_TRACE(version);
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = 2 * kCs, .version = version, .cluster_size = kCs});
    std::vector<uint8_t> data(2 * kCs);
    for (uint64_t i = 0; i < data.size(); ++i) data[i] = uint8_t(1 + i / 100);  // compresses
    ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
    auto st = loop->run(m.drv->block_status(kCs, kCs));
    ASSERT_OK(st);
    ASSERT_TRUE(st->compressed);
    // The compressed cluster straddling the new end keeps its old bytes past it.
    ASSERT_OK(loop->run(m.drv->resize(kCs + 4096, {.allow_shrink = true})));
    ASSERT_OK(loop->run(m.drv->resize(2 * kCs, {})));
    std::vector<uint8_t> want(data.begin(), data.begin() + kCs + 4096);
    want.resize(2 * kCs, 0);
    expect_same(read_all(*loop, *m.drv, 0, 2 * kCs), want);
    m.reopen();
    expect_same(read_all(*loop, *m.drv, 0, 2 * kCs), want);
    m.close();
    test::expect_clean(*loop, m);
  }
}

TEST(Qcow2CompressedWrite, PartialClusterMustReachTheImagesLastSector) {
  // A compressed write that stopped inside the last cluster short of the image's end was taken
  // and padded with zeros, wiping bytes the caller did not write (and only when the data
  // compressed: an incompressible cluster went through the ordinary write and kept them).
  auto loop = make_loop();
  const uint64_t size = 3 * kCs + 8192;
  test::MemImage m(*loop, {.size = size, .cluster_size = kCs});
  auto before = filled(size, 0x21);
  ASSERT_OK(loop->run(m.drv->write(0, before.data(), before.size())));
  std::vector<uint8_t> c(100, 0x33);
  auto s = loop->run(m.drv->write_compressed(3 * kCs, c.data(), c.size()));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  expect_same(read_all(*loop, *m.drv, 0, size), before);
  // Into the image's last sector it is whole enough (a source whose size is not a multiple of
  // 512 ends there): the rest of the sector reads as zeros, like the rounded-up end of a QEMU
  // image.
  std::vector<uint8_t> tail(8192 - 100, 0x44);
  ASSERT_OK(loop->run(m.drv->write_compressed(3 * kCs, tail.data(), tail.size())));
  std::copy(tail.begin(), tail.end(), before.begin() + 3 * kCs);
  std::fill(before.begin() + 3 * kCs + tail.size(), before.end(), 0);
  expect_same(read_all(*loop, *m.drv, 0, size), before);
  tail.resize(8192, 0x55);
  ASSERT_OK(loop->run(m.drv->write_compressed(3 * kCs, tail.data(), tail.size())));
  std::copy(tail.begin(), tail.end(), before.begin() + 3 * kCs);
  expect_same(read_all(*loop, *m.drv, 0, size), before);
  // Data that does not compress is stored as it is, with the same zeros after it.
  std::mt19937 rng(7);
  for (auto& b : tail) b = static_cast<uint8_t>(rng());
  tail.resize(8192 - 100);
  ASSERT_OK(loop->run(m.drv->write_compressed(3 * kCs, tail.data(), tail.size())));
  std::copy(tail.begin(), tail.end(), before.begin() + 3 * kCs);
  std::fill(before.begin() + 3 * kCs + tail.size(), before.end(), 0);
  expect_same(read_all(*loop, *m.drv, 0, size), before);
  m.close();
  test::expect_clean(*loop, m);
}

}  // namespace
}  // namespace img
