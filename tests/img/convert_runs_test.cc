// convert walks runs, not fixed chunks: block_status answers whole runs (an L1 entry of 0 for
// its whole L2 table's range, merged entries of one kind, raw holes through SEEK_DATA), so an
// empty image of any virtual size costs one call, and the sources concatenate.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "tool_test_util.h"

namespace img {
namespace {

constexpr uint64_t kPiB = 1ull << 50;

std::unique_ptr<BlockDriver> new_qcow2(IoLoop& loop, uint64_t size) {
  auto f = make_mem_file(&loop);
  Qcow2CreateOptions o;
  o.size = size;
  EXPECT_TRUE(loop.run(create_qcow2(*f, o)).has_value());
  auto d = loop.run(open_image_file(loop, std::move(f), {.format = "qcow2"}));
  EXPECT_TRUE(d.has_value()) << d.error().to_string();
  return std::move(*d);
}

TEST(BlockStatusRuns, EmptyPetabyteQcow2IsOneRun) {
  auto loop = IoLoop::create().value();
  auto img = new_qcow2(*loop, kPiB);
  auto st = loop->run(img->block_status(0, kPiB));
  ASSERT_TRUE(st.has_value()) << st.error().to_string();
  EXPECT_EQ(st->kind, BlockStatus::Kind::kUnallocated);
  EXPECT_EQ(st->length, kPiB);
  // Clamped to what was asked, from anywhere.
  st = loop->run(img->block_status(12345, 1 << 20));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->length, 1u << 20);
}

// Data in L2 tables far apart: the runs between them span many missing L2 tables each (one
// call each), and a run of zero clusters is one run.
TEST(BlockStatusRuns, RunsCrossL2Tables) {
  auto loop = IoLoop::create().value();
  constexpr uint64_t kSize = 16ull << 40;
  constexpr uint64_t kL2Span = 512ull << 20;  // 64 KiB clusters: 8192 entries a table
  auto img = new_qcow2(*loop, kSize);
  std::vector<uint8_t> data(256 << 10, 0xab);
  // 128 KiB each side of the boundary between L2 tables 3 and 4: one host-contiguous run.
  ASSERT_TRUE(loop->run(img->write(4 * kL2Span - (128 << 10), data.data(), data.size())));
  // Written, then zeroed keeping the clusters: zero clusters (a zero write over unallocated
  // clusters without a backing file changes nothing: they read as zeros already).
  std::vector<uint8_t> mib(1 << 20, 0x11);
  ASSERT_TRUE(loop->run(img->write(700ull << 30, mib.data(), mib.size())));
  ASSERT_TRUE(loop->run(img->write_zeroes(700ull << 30, 1 << 20, {.may_unmap = false})));
  ASSERT_TRUE(loop->run(img->write(kSize - 65536, data.data(), 65536)));

  struct Run {
    BlockStatus::Kind kind;
    uint64_t off, len;
  };
  std::vector<Run> runs;
  for (uint64_t off = 0; off < kSize;) {
    auto st = loop->run(img->block_status(off, kSize - off));
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    ASSERT_GT(st->length, 0u);
    runs.push_back({st->kind, off, st->length});
    off += st->length;
  }
  using K = BlockStatus::Kind;
  std::string seen;
  for (const Run& r : runs) {
    seen += strfmt("[%d %llu +%llu] ", static_cast<int>(r.kind), (unsigned long long)r.off,
                   (unsigned long long)r.len);
  }
  // The write allocated the second L2 table between the two halves' data clusters, so the data
  // is two runs (a run of data is host-contiguous, as qemu-img map shows it).
  ASSERT_EQ(runs.size(), 7u) << seen;
  EXPECT_EQ(runs[0].kind, K::kUnallocated);
  EXPECT_EQ(runs[0].len, 4 * kL2Span - (128 << 10));  // three whole missing L2 tables and more
  EXPECT_EQ(runs[1].kind, K::kData);
  EXPECT_EQ(runs[2].kind, K::kData);
  EXPECT_EQ(runs[1].len + runs[2].len, 256u << 10);
  EXPECT_EQ(runs[3].kind, K::kUnallocated);
  EXPECT_EQ(runs[4].kind, K::kZero);
  EXPECT_EQ(runs[4].off, 700ull << 30);
  EXPECT_EQ(runs[4].len, 1u << 20);
  EXPECT_EQ(runs[5].kind, K::kUnallocated);  // about 15.3 TiB in one answer
  EXPECT_EQ(runs[6].kind, K::kData);
  EXPECT_EQ(runs[6].len, 65536u);
}

// The cost of converting an empty image does not grow with its virtual size: one block_status
// call for 1 PiB, nothing read, nothing written, and the target reads back empty.
TEST(ConvertRuns, EmptyPetabyteCostsOneCall) {
  auto loop = IoLoop::create().value();
  auto src = new_qcow2(*loop, kPiB);
  auto dst = new_qcow2(*loop, kPiB);
  auto stats = loop->run(convert(*loop, *src, *dst, {}));
  ASSERT_TRUE(stats.has_value()) << stats.error().to_string();
  EXPECT_EQ(stats->block_status_calls, 1u);
  EXPECT_EQ(stats->bytes_read, 0u);
  EXPECT_EQ(stats->bytes_written, 0u);
  EXPECT_EQ(stats->bytes_zero, kPiB);
  auto st = loop->run(dst->block_status(0, kPiB));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->kind, BlockStatus::Kind::kUnallocated);
  EXPECT_EQ(st->length, kPiB);
}

// Several sources end to end, in order, without writes out of order by default.
TEST(ConvertRuns, SourcesConcatenate) {
  auto loop = IoLoop::create().value();
  auto a = new_qcow2(*loop, 3 << 20);
  auto b_file = make_mem_file(loop.get());
  std::vector<uint8_t> b_data(1 << 20);
  for (size_t i = 0; i < b_data.size(); ++i) b_data[i] = static_cast<uint8_t>(i * 13 + 1);
  ASSERT_TRUE(loop->run(b_file->write(0, b_data.data(), b_data.size())));
  auto b = make_raw_driver(std::move(b_file));
  std::vector<uint8_t> a_data(64 << 10, 0x5a);
  ASSERT_TRUE(loop->run(a->write(2 << 20, a_data.data(), a_data.size())));
  auto dst = new_qcow2(*loop, 4 << 20);
  BlockDriver* srcs[] = {a.get(), b.get()};
  auto stats = loop->run(convert(*loop, std::span<BlockDriver* const>(srcs), *dst, {}));
  ASSERT_TRUE(stats.has_value()) << stats.error().to_string();
  std::vector<uint8_t> back(4 << 20);
  ASSERT_TRUE(loop->run(dst->read(0, back.data(), back.size())));
  std::vector<uint8_t> want(4 << 20, 0);
  std::memcpy(want.data() + (2 << 20), a_data.data(), a_data.size());
  std::memcpy(want.data() + (3 << 20), b_data.data(), b_data.size());
  EXPECT_EQ(back, want);
  EXPECT_EQ(stats->bytes_read, a_data.size() + b_data.size());
}

}  // namespace
}  // namespace img

namespace imgtest {
namespace {

// A raw image's holes report as zeros (SEEK_HOLE), its data as data.
TEST(BlockStatusRuns, RawHolesAreZero) {
  TempDir d;
  std::string f = d.file("h.raw");
  ASSERT_EQ(sh("truncate -s 64M " + f + " && printf x | dd of=" + f +
               " bs=1M seek=40 conv=notrunc status=none")
                .rc,
            0);
  auto loop = img::IoLoop::create().value();
  auto drv = loop->run(img::open_image(*loop, f, {.format = "raw", .read_only = true}));
  ASSERT_TRUE(drv.has_value());
  auto st = loop->run((*drv)->block_status(0, 64 << 20));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->kind, img::BlockStatus::Kind::kZero);
  // The file system's block granularity decides where the data extent begins.
  EXPECT_GE(st->length, 36u << 20);
  EXPECT_LE(st->length, 40u << 20);
  auto data = loop->run((*drv)->block_status(40 << 20, 24 << 20));
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->kind, img::BlockStatus::Kind::kData);
  EXPECT_LT(data->length, 24u << 20);
}

// -C: raw onto raw host files, the data moves by copy_file_range (nothing read into the
// process), the holes stay holes, and the target is the source byte for byte.
TEST(ConvertRuns, CopyOffloadRawToRaw) {
  TempDir d;
  std::string src = d.file("s.raw"), dst = d.file("d.raw");
  ASSERT_EQ(sh("truncate -s 32M " + src + " && head -c 3M /dev/urandom | dd of=" + src +
               " bs=1M seek=5 conv=notrunc status=none && truncate -s 32M " + dst)
                .rc,
            0);
  auto loop = img::IoLoop::create().value();
  auto s = loop->run(img::open_image(*loop, src, {.format = "raw", .read_only = true}));
  auto t = loop->run(img::open_image(*loop, dst, {.format = "raw"}));
  ASSERT_TRUE(s.has_value() && t.has_value());
  img::ConvertOptions o;
  o.copy_range = true;
  auto stats = loop->run(img::convert(*loop, **s, **t, o));
  ASSERT_TRUE(stats.has_value()) << stats.error().to_string();
  EXPECT_EQ(stats->bytes_offloaded, 3u << 20);
  EXPECT_EQ(stats->bytes_read, 0u);
  ASSERT_TRUE(loop->run((*t)->close()));
  EXPECT_EQ(sh("cmp " + src + " " + dst).rc, 0);
}

}  // namespace
}  // namespace imgtest
