// BlockDriver::make_empty (qemu-img commit empties the top image with it) and set_backing_file
// (rebase): an emptied overlay reads its backing file again everywhere, data and zero clusters
// alike, passes check with no leaks, and leaves a snapshot's data alone; a changed backing file
// is what the reopened image reads from, and the header keeps what it had.
#include <gtest/gtest.h>

#include "img/image.h"
#include "img/qcow2.h"
#include "img/snapshot.h"
#include "mem_fs.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::MemFs;

constexpr uint64_t kCs = 65536;
constexpr uint64_t kSize = 16 * kCs;

void make_qcow2(IoLoop& loop, MemFs& fs, const std::string& path, std::string backing = "") {
  Qcow2CreateOptions o{.size = kSize, .cluster_size = kCs};
  o.backing_file = backing;
  o.backing_format = backing.empty() ? "" : "raw";
  ASSERT_OK(loop.run(create_qcow2(fs.create(path), o)));
}

std::vector<uint8_t> read_all(IoLoop& loop, BlockDriver& d) {
  std::vector<uint8_t> buf(d.size(), 0xee);
  EXPECT_TRUE(loop.run(d.read(0, buf.data(), buf.size())).has_value());
  return buf;
}

void expect_clean(IoLoop& loop, MemFs& fs, const std::string& path) {
  auto r = loop.run(check_qcow2(*fs.find(path), RepairMode::kNone));
  ASSERT_OK(r);
  EXPECT_EQ(r->corruptions + r->leaks, 0u) << path;
}

// base.raw: bytes 0x11; ov.qcow2 over it: data, a zero cluster and a partial write.
void make_overlay(IoLoop& loop, MemFs& fs) {
  fs.create("base.raw").bytes().assign(kSize, 0x11);
  make_qcow2(loop, fs, "ov.qcow2", "base.raw");
  auto d = loop.run(open_image(loop, "ov.qcow2", {.opener = &fs}));
  ASSERT_OK(d);
  std::vector<uint8_t> a(3 * kCs, 0xa1);
  ASSERT_OK(loop.run((*d)->write(kCs, a.data(), a.size())));
  ASSERT_OK(loop.run((*d)->write_zeroes(6 * kCs, kCs, {})));
  ASSERT_OK(loop.run((*d)->write(9 * kCs + 100, a.data(), 1000)));
  ASSERT_OK(loop.run((*d)->close()));
}

TEST(Qcow2MakeEmpty, TheOverlayReadsItsBackingFileAgain) {
  auto loop = make_loop();
  MemFs fs;
  make_overlay(*loop, fs);
  const uint64_t full_size = fs.find("ov.qcow2")->bytes().size();
  {
    auto d = loop->run(open_image(*loop, "ov.qcow2", {.opener = &fs}));
    ASSERT_OK(d);
    ASSERT_OK(loop->run((*d)->make_empty()));
    EXPECT_EQ(read_all(*loop, **d), std::vector<uint8_t>(kSize, 0x11));
    auto st = loop->run((*d)->block_status(0, kSize));
    ASSERT_OK(st);
    EXPECT_EQ(st->kind, BlockStatus::Kind::kBacking);
    EXPECT_EQ(st->length, kSize) << "no cluster of its own is left";
    ASSERT_OK(loop->run((*d)->close()));
  }
  expect_clean(*loop, fs, "ov.qcow2");
  EXPECT_LT(fs.find("ov.qcow2")->bytes().size(), full_size) << "the data clusters are given back";
}

TEST(Qcow2MakeEmpty, ASnapshotKeepsItsData) {
  auto loop = make_loop();
  MemFs fs;
  make_overlay(*loop, fs);
  std::vector<uint8_t> before;
  {
    auto d = loop->run(open_image(*loop, "ov.qcow2", {.opener = &fs}));
    ASSERT_OK(d);
    before = read_all(*loop, **d);
    ASSERT_OK(loop->run(create_snapshot(**d, {.name = "s1"})));
    ASSERT_OK(loop->run((*d)->make_empty()));
    EXPECT_EQ(read_all(*loop, **d), std::vector<uint8_t>(kSize, 0x11));
    ASSERT_OK(loop->run(apply_snapshot(**d, "s1")));
    EXPECT_EQ(read_all(*loop, **d), before);
    ASSERT_OK(loop->run((*d)->close()));
  }
  expect_clean(*loop, fs, "ov.qcow2");
}

TEST(Qcow2SetBackingFile, TheReopenedImageReadsTheNewOne) {
  auto loop = make_loop();
  MemFs fs;
  make_overlay(*loop, fs);
  fs.create("other.raw").bytes().assign(kSize, 0x22);
  {
    auto d = loop->run(open_image(*loop, "ov.qcow2", {.opener = &fs}));
    ASSERT_OK(d);
    ASSERT_OK(loop->run((*d)->set_backing_file("other.raw", "raw")));
    ASSERT_OK(loop->run((*d)->close()));
  }
  auto info = loop->run(read_qcow2_info(*fs.find("ov.qcow2")));
  ASSERT_OK(info);
  EXPECT_EQ(info->backing_file, "other.raw");
  EXPECT_EQ(info->backing_format, "raw");
  EXPECT_EQ(info->cluster_size, kCs);
  auto d = loop->run(open_image(*loop, "ov.qcow2", {.read_only = true, .opener = &fs}));
  ASSERT_OK(d);
  auto got = read_all(*loop, **d);
  EXPECT_EQ(got[0], 0x22);             // unallocated: the new backing file
  EXPECT_EQ(got[kCs], 0xa1);           // the overlay's own data
  EXPECT_EQ(got[6 * kCs], 0);          // its zero cluster
  EXPECT_EQ(got[9 * kCs + 99], 0x11);  // copied up from the old one when it was written
  ASSERT_OK(loop->run((*d)->close()));
  // No backing file at all; the file-level form (rebase -u) without a driver.
  ASSERT_OK(loop->run(write_qcow2_backing_file(*fs.find("ov.qcow2"), "", "")));
  info = loop->run(read_qcow2_info(*fs.find("ov.qcow2")));
  ASSERT_OK(info);
  EXPECT_EQ(info->backing_file, "");
  EXPECT_EQ(info->backing_format, "");
  expect_clean(*loop, fs, "ov.qcow2");
}

TEST(Qcow2SetBackingFile, RawImagesHaveNoBackingFile) {
  auto loop = make_loop();
  auto raw = make_raw_driver(make_mem_file());
  auto s = loop->run(raw->set_backing_file("x", "raw"));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kNotSupported);
  auto e = loop->run(raw->make_empty());
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), ErrorCode::kNotSupported);
}

}  // namespace
}  // namespace img
