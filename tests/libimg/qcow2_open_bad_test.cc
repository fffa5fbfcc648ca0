// Hostile and broken qcow2 files through the whole open path (open_image_file, not only the
// header decoder): each gives an error that names the problem, on open or on the first request
// that touches the broken metadata; never a crash or an allocation sized by the file's claims.
// Features the driver does not implement (backing files, compressed clusters) are refused by
// name.
#include <vector>

#include "img/bytes.h"
#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2_test_util.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

// Header field offsets (qcow2.rst "Header").
constexpr size_t kL1Size = 36, kL1Offset = 40, kRefTableOffset = 48, kRefTableClusters = 56;
constexpr uint64_t kCluster = 65536;
constexpr uint64_t kCopied = 1ull << 63;

class Qcow2OpenBad : public ::testing::Test {
 protected:
  // A valid 4 MiB image with 64 KiB clusters and data in the first two guest clusters.
  void SetUp() override {
    test::MemImage m(*loop_, {.size = 4 << 20, .cluster_size = kCluster});
    std::vector<uint8_t> d(2 * kCluster, 0x42);
    ASSERT_OK(loop_->run(m.drv->write(0, d.data(), d.size())));
    m.close();
    good_ = m.file_bytes();
  }

  Result<std::unique_ptr<BlockDriver>> open_bytes(const std::vector<uint8_t>& bytes,
                                                  bool read_only = false) {
    auto f = make_mem_file(nullptr, "bad.qcow2");
    f->bytes() = bytes;
    return loop_->run(
        open_image_file(*loop_, std::move(f), {.format = "qcow2", .read_only = read_only}));
  }

  // Opening fails with a corruption (or not-supported) error whose message contains `what`.
  void expect_open_error(const std::vector<uint8_t>& bytes, const std::string& what,
                         ErrorCode code = ErrorCode::kCorruption) {
    auto d = open_bytes(bytes);
    ASSERT_FALSE(d.has_value()) << "opened an image that should be refused (" << what << ")";
    EXPECT_EQ(d.error().code(), code) << d.error().to_string();
    EXPECT_NE(d.error().message().find(what), std::string::npos) << d.error().to_string();
  }

  // Opens fine; the first read of guest offset 0 fails naming `what`, and so does a write.
  void expect_first_access_error(const std::vector<uint8_t>& bytes, const std::string& what,
                                 ErrorCode code = ErrorCode::kCorruption) {
    auto d = open_bytes(bytes);
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::vector<uint8_t> buf(4096);
    auto r = loop_->run((*d)->read(0, buf.data(), buf.size()));
    ASSERT_FALSE(r.has_value()) << "read through broken metadata succeeded (" << what << ")";
    EXPECT_EQ(r.error().code(), code) << r.error().to_string();
    EXPECT_NE(r.error().message().find(what), std::string::npos) << r.error().to_string();
    auto w = loop_->run((*d)->write(100, buf.data(), buf.size()));
    ASSERT_FALSE(w.has_value()) << "write through broken metadata succeeded (" << what << ")";
    EXPECT_NE(w.error().message().find(what), std::string::npos) << w.error().to_string();
    (void)loop_->run((*d)->close());
  }

  uint64_t l1_offset() const { return load_be64(&good_[kL1Offset]); }
  uint64_t reftable_offset() const { return load_be64(&good_[kRefTableOffset]); }
  uint64_t l2_offset() const { return load_be64(&good_[l1_offset()]) & 0x00fffffffffffe00ull; }
  uint64_t data_offset() const { return load_be64(&good_[l2_offset()]) & 0x00fffffffffffe00ull; }

  std::unique_ptr<IoLoop> loop_ = make_loop();
  std::vector<uint8_t> good_;
};

TEST_F(Qcow2OpenBad, ValidImageOpens) {
  auto d = open_bytes(good_);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  EXPECT_NE(l2_offset(), 0u);
  EXPECT_NE(data_offset(), 0u);
}

TEST_F(Qcow2OpenBad, EmptyFile) { expect_open_error({}, "too short"); }

TEST_F(Qcow2OpenBad, FiftyBytes) {
  expect_open_error(std::vector<uint8_t>(good_.begin(), good_.begin() + 50), "too short");
}

TEST_F(Qcow2OpenBad, HeaderClusterOnlyNoTables) {
  // The header claims an L1 and a refcount table that the file does not hold.
  expect_open_error(std::vector<uint8_t>(good_.begin(), good_.begin() + kCluster),
                    "past the end of the file");
}

TEST_F(Qcow2OpenBad, BadMagic) {
  auto b = good_;
  b[0] = 'X';
  expect_open_error(b, "bad magic");
}

TEST_F(Qcow2OpenBad, AbsurdL1Size) {
  auto b = good_;
  store_be32(&b[kL1Size], 0x7fffffff);
  // The message names the limit (QEMU's QCOW_MAX_L1_SIZE) so a user knows why.
  expect_open_error(b, "l1_size 2147483647 exceeds the 32 MiB L1 table limit",
                    ErrorCode::kNotSupported);
  // One entry over the limit is refused too, before the table is read or allocated.
  store_be32(&b[kL1Size], (32u << 20) / 8 + 1);
  expect_open_error(b, "exceeds the 32 MiB L1 table limit", ErrorCode::kNotSupported);
}

TEST_F(Qcow2OpenBad, L1SizeLargerThanTheFile) {
  // Below the 32 MiB limit, but the table would lie past the end of the file.
  auto b = good_;
  store_be32(&b[kL1Size], 1 << 20);
  expect_open_error(b, "l1_table_offset");
}

TEST_F(Qcow2OpenBad, AbsurdRefcountTableClusters) {
  auto b = good_;
  store_be32(&b[kRefTableClusters], 0xffffffff);
  expect_open_error(b, "refcount_table_clusters 4294967295 exceeds the 8 MiB refcount table limit");
}

TEST_F(Qcow2OpenBad, ZeroRefcountTableClusters) {
  auto b = good_;
  store_be32(&b[kRefTableClusters], 0);
  expect_open_error(b, "refcount_table_clusters");
}

TEST_F(Qcow2OpenBad, L1TablePastEof) {
  auto b = good_;
  store_be64(&b[kL1Offset], align_up(b.size(), kCluster) + 16 * kCluster);
  expect_open_error(b, "l1_table_offset");
}

TEST_F(Qcow2OpenBad, L1TableOverlapsHeader) {
  auto b = good_;
  store_be64(&b[kL1Offset], 0);
  expect_open_error(b, "overlaps the header");
}

TEST_F(Qcow2OpenBad, L1TableUnaligned) {
  auto b = good_;
  store_be64(&b[kL1Offset], l1_offset() + 8);
  expect_open_error(b, "not aligned");
}

TEST_F(Qcow2OpenBad, RefcountTablePastEof) {
  auto b = good_;
  store_be64(&b[kRefTableOffset], uint64_t(1) << 40);
  expect_open_error(b, "refcount_table_offset");
}

TEST_F(Qcow2OpenBad, RefcountTableOverlapsHeader) {
  auto b = good_;
  store_be64(&b[kRefTableOffset], 0);
  expect_open_error(b, "overlaps the header");
}

TEST_F(Qcow2OpenBad, L1EntryPastEof) {
  auto b = good_;
  store_be64(&b[l1_offset()], (align_up(b.size(), kCluster) + 8 * kCluster) | kCopied);
  expect_first_access_error(b, "past the end of the file");
}

TEST_F(Qcow2OpenBad, L1EntryUnaligned) {
  auto b = good_;
  store_be64(&b[l1_offset()], (l2_offset() + 512) | kCopied);
  expect_first_access_error(b, "not a valid cluster offset");
}

TEST_F(Qcow2OpenBad, L1EntryReservedBits) {
  auto b = good_;
  store_be64(&b[l1_offset()], l2_offset() | kCopied | (1ull << 60));
  expect_first_access_error(b, "reserved bits");
}

TEST_F(Qcow2OpenBad, L2EntryReservedBits) {
  auto b = good_;
  store_be64(&b[l2_offset()], data_offset() | kCopied | 2);
  expect_first_access_error(b, "reserved bits");
}

TEST_F(Qcow2OpenBad, L2EntryUnalignedDataOffset) {
  auto b = good_;
  store_be64(&b[l2_offset()], (data_offset() + 4096) | kCopied);
  expect_first_access_error(b, "not cluster aligned");
}

TEST_F(Qcow2OpenBad, RefcountTableEntryUnalignedFailsTheFirstAllocation) {
  auto b = good_;
  uint64_t rb = load_be64(&b[reftable_offset()]);
  store_be64(&b[reftable_offset()], rb + 512);
  auto d = open_bytes(b);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  // Reads need no refcounts.
  std::vector<uint8_t> buf(4096);
  ASSERT_OK(loop_->run((*d)->read(0, buf.data(), buf.size())));
  EXPECT_EQ(buf[0], 0x42);
  // A write into an unallocated cluster must allocate, and so consult the refcount table.
  auto w = loop_->run((*d)->write(3 << 20, buf.data(), buf.size()));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), ErrorCode::kCorruption) << w.error().to_string();
  EXPECT_NE(w.error().message().find("refcount table entry 0"), std::string::npos)
      << w.error().to_string();
  (void)loop_->run((*d)->close());
}

// Bug (found by qcow2_driver_fuzz): refcounts that call the header, the tables and the refcount
// block free made the allocator hand those clusters out (overwriting the header with an L2 table),
// and with 1-bit refcounts it looped for ever creating refcount blocks. Now the allocation is
// refused and the image marked corrupt.
TEST_F(Qcow2OpenBad, ZeroRefcountOnMetadataClustersIsCorruptionNotReuse) {
  auto b = good_;
  uint64_t rb = load_be64(&b[reftable_offset()]);
  std::fill(b.begin() + rb, b.begin() + rb + 32, 0);  // clusters 0..15: refcount 0
  auto d = open_bytes(b);
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  std::vector<uint8_t> buf(5000, 0x17);
  auto w = loop_->run((*d)->write(3 << 20, buf.data(), buf.size()));
  ASSERT_FALSE(w.has_value()) << "allocated over metadata";
  EXPECT_EQ(w.error().code(), ErrorCode::kCorruption) << w.error().to_string();
  EXPECT_NE(w.error().message().find("refcount of metadata cluster"), std::string::npos)
      << w.error().to_string();
  // Data already there still reads; further writes are refused, not misplaced.
  ASSERT_OK(loop_->run((*d)->read(0, buf.data(), 4096)));
  EXPECT_EQ(buf[0], 0x42);
  EXPECT_FALSE(loop_->run((*d)->write(3 << 20, buf.data(), 512)).has_value());
  (void)loop_->run((*d)->close());
}

TEST_F(Qcow2OpenBad, CompressedDescriptorOverPlainDataIsCorruptionByName) {
  auto b = good_;
  // A compressed descriptor (bit 62, one sector) over a cluster of plain guest data: the data is
  // no deflate stream of a whole cluster, and both reading it and merging a write into it say so.
  store_be64(&b[l2_offset()], (1ull << 62) | data_offset());
  expect_first_access_error(b, "compressed cluster", ErrorCode::kCorruption);
}

TEST_F(Qcow2OpenBad, MissingBackingFileIsNamed) {
  auto f = make_mem_file(nullptr, "overlay.qcow2");
  ASSERT_OK(loop_->run(create_qcow2(
      *f, {.size = 1 << 20, .backing_file = "no-such-base-7f3a.raw", .backing_format = "raw"})));
  auto d = loop_->run(open_image_file(*loop_, std::move(f), {.format = "qcow2"}));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(d.error().message().find("backing file"), std::string::npos) << d.error().to_string();
  EXPECT_NE(d.error().message().find("no-such-base-7f3a.raw"), std::string::npos)
      << d.error().to_string();
}

// Regression for the time compressed clusters were refused: qemu-img's compressed image now
// reads as written, and a write into a compressed cluster merges with its data.
TEST_F(Qcow2OpenBad, QemuCompressedImageReadsAndMergesWrites) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::TempDir dir;
  std::string src = dir.file("src.qcow2"), comp = dir.file("comp.qcow2");
  auto r = test::run_tool("qemu-img create -q -f qcow2 " + test::shell_quote(src) +
                          " 1M && qemu-io -c 'write -P 0x61 0 256k' " + test::shell_quote(src) +
                          " >/dev/null && qemu-img convert -c -O qcow2 " + test::shell_quote(src) +
                          " " + test::shell_quote(comp));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto d = loop_->run(open_image(*loop_, comp, {}));
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  std::vector<uint8_t> buf(4096);
  ASSERT_OK(loop_->run((*d)->read(0, buf.data(), buf.size())));
  EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0x61));
  std::vector<uint8_t> w(512, 0x62);
  ASSERT_OK(loop_->run((*d)->write(0, w.data(), w.size())));
  ASSERT_OK(loop_->run((*d)->read(0, buf.data(), buf.size())));
  EXPECT_EQ(buf[511], 0x62);
  EXPECT_EQ(buf[512], 0x61);
  ASSERT_OK(loop_->run((*d)->close()));
}

}  // namespace
}  // namespace img
