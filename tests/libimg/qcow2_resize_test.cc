// BlockDriver::resize on qcow2 (libimg/src/qcow2/resize.cc) and raw: what a user checks after a
// resize is the new size (after reopening), the old data intact, the new space reading as
// zeros, and an image that check finds clean (no leaks: freed tables and clusters are counted
// free again).
#include <sys/stat.h>

#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "qcow2/format.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

qcow2::Header header_of(test::MemImage& m) {
  auto h = qcow2::decode_header(m.file_bytes(), m.file_bytes().size());
  EXPECT_TRUE(h.has_value()) << h.error().to_string();
  return h ? *h : qcow2::Header{};
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + i / 512);
  return v;
}

void expect_reads(IoLoop& loop, BlockDriver& d, uint64_t off, const std::vector<uint8_t>& want) {
  std::vector<uint8_t> got(want.size());
  ASSERT_OK(loop.run(d.read(off, got.data(), got.size())));
  EXPECT_TRUE(got == want) << "data at " << off << " differs";
}

void expect_zeros(IoLoop& loop, BlockDriver& d, uint64_t off, uint64_t len) {
  expect_reads(loop, d, off, std::vector<uint8_t>(len, 0));
}

TEST(Qcow2Resize, GrowWithinTheL1TableKeepsTheTableAndData) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});  // 64 KiB clusters: one L1 entry maps 512 MiB
  auto data = pattern(200000, 3);
  ASSERT_OK(loop->run(m.drv->write(300000, data.data(), data.size())));
  qcow2::Header before = header_of(m);
  ASSERT_OK(loop->run(m.drv->resize(100 << 20, {})));
  EXPECT_EQ(m.drv->size(), 100u << 20);
  m.reopen();
  qcow2::Header after = header_of(m);
  EXPECT_EQ(after.size, 100u << 20);
  EXPECT_EQ(after.l1_size, before.l1_size);
  EXPECT_EQ(after.l1_table_offset, before.l1_table_offset);
  expect_reads(*loop, *m.drv, 300000, data);
  expect_zeros(*loop, *m.drv, 1 << 20, 1 << 20);
  auto more = pattern(5000, 9);
  ASSERT_OK(loop->run(m.drv->write((100 << 20) - 5000, more.data(), more.size())));
  m.reopen();
  expect_reads(*loop, *m.drv, (100 << 20) - 5000, more);
  m.close();
  test::expect_clean(*loop, m);
}

TEST(Qcow2Resize, GrowPastTheL1TableRelocatesIt) {
  auto loop = make_loop();
  // 512-byte clusters: an L2 table maps 32 KiB, so 64 KiB needs 2 L1 entries and 4 MiB 128.
  test::MemImage m(*loop, {.size = 64 << 10, .cluster_size = 512});
  auto a = pattern(64 << 10, 1);
  ASSERT_OK(loop->run(m.drv->write(0, a.data(), a.size())));
  qcow2::Header before = header_of(m);
  ASSERT_EQ(before.l1_size, 2u);
  ASSERT_OK(loop->run(m.drv->resize(4 << 20, {})));
  m.reopen();
  qcow2::Header after = header_of(m);
  EXPECT_EQ(after.size, 4u << 20);
  EXPECT_EQ(after.l1_size, 128u);
  EXPECT_NE(after.l1_table_offset, before.l1_table_offset);
  expect_reads(*loop, *m.drv, 0, a);
  expect_zeros(*loop, *m.drv, 64 << 10, (4 << 20) - (64 << 10));
  // The new L1 entries work: write into the last L2 table's range.
  auto b = pattern(3000, 5);
  ASSERT_OK(loop->run(m.drv->write((4 << 20) - 3000, b.data(), b.size())));
  m.reopen();
  expect_reads(*loop, *m.drv, (4 << 20) - 3000, b);
  expect_reads(*loop, *m.drv, 0, a);
  m.close();
  // The old table's cluster was freed: no leak.
  test::expect_clean(*loop, m);
}

TEST(Qcow2Resize, GrowPastThe32MiBL1CapIsRefusedAndChangesNothing) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = 512});
  std::vector<uint8_t> before = m.file_bytes();
  // 512-byte clusters: 32 MiB of L1 (4 Mi entries of 32 KiB) map 128 GiB at most.
  auto s = loop->run(m.drv->resize(129ull << 30, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kNoSpace);
  EXPECT_NE(s.error().message().find("Failed to grow the L1 table"), std::string::npos);
  EXPECT_EQ(m.drv->size(), 1u << 20);
  m.close();
  EXPECT_TRUE(m.file_bytes() == before);
}

TEST(Qcow2Resize, HeaderWithAnL1TableTooSmallForItsSizeIsRefusedByName) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 64 << 10, .cluster_size = 512});
  m.close();
  // Claim 1 MiB (32 L1 entries needed) over the 2-entry table.
  store_be64(m.file_bytes().data() + 24, 1 << 20);
  auto s = m.open({});
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(s.error().message().find("l1_size 2 too small"), std::string::npos)
      << s.error().message();
}

TEST(Qcow2Resize, SizeMustBeAMultipleOf512) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});
  auto s = loop->run(m.drv->resize((2 << 20) + 1, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().message(), "The new size must be a multiple of 512");
}

TEST(Qcow2Resize, ShrinkOverDataIsRefusedUnlessAllowed) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = 4096});
  // 10 bytes at 698880 (0xaaa00), inside guest cluster 170 = [0xaa000, 0xab000).
  auto d = pattern(10, 7);
  ASSERT_OK(loop->run(m.drv->write(698880, d.data(), d.size())));
  auto s = loop->run(m.drv->resize(512 << 10, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("would drop the data at guest offset 0xaa000"),
            std::string::npos)
      << s.error().message();
  EXPECT_EQ(m.drv->size(), 1u << 20);
  // A cut-off part that holds nothing may go without permission.
  ASSERT_OK(loop->run(m.drv->resize(800 << 10, {})));
  EXPECT_EQ(m.drv->size(), 800u << 10);
  // Cluster 170 straddles 699392: only its bytes past the new end count, and they are zeros.
  ASSERT_OK(loop->run(m.drv->resize(699392, {})));
  s = loop->run(m.drv->resize(698880, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("would drop the data at guest offset 0xaaa00"),
            std::string::npos)
      << s.error().message();
  m.reopen();
  EXPECT_EQ(m.drv->size(), 699392u);
  expect_reads(*loop, *m.drv, 698880, d);
  m.close();
  test::expect_clean(*loop, m);
}

TEST(Qcow2Resize, ShrinkFreesClustersAndTablesAndCutsTheFile) {
  auto loop = make_loop();
  // 512-byte clusters, 1 MiB: 32 L2 tables. Data everywhere.
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = 512});
  auto all = pattern(1 << 20, 11);
  ASSERT_OK(loop->run(m.drv->write(0, all.data(), all.size())));
  m.reopen();
  uint64_t file_before = m.file_bytes().size();
  qcow2::Header h0 = header_of(m);
  // 100 KiB + 512: the last kept cluster straddles nothing (512-byte clusters).
  const uint64_t kNew = (100 << 10) + 512;
  ASSERT_OK(loop->run(m.drv->resize(kNew, {.allow_shrink = true})));
  m.reopen();
  qcow2::Header h1 = header_of(m);
  EXPECT_EQ(h1.size, kNew);
  EXPECT_EQ(h1.l1_size, h0.l1_size);  // kept, as QEMU keeps it
  expect_reads(*loop, *m.drv, 0, std::vector<uint8_t>(all.begin(), all.begin() + kNew));
  // Data clusters and L2 tables past the end are free, and the file ends after its last used
  // cluster (a refcount block: unused ones are not dropped yet, so the cut is not as deep as
  // QEMU's).
  auto r = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_OK(r);
  EXPECT_EQ(r->leaks, 0u);
  EXPECT_EQ(r->corruptions, 0u);
  EXPECT_EQ(r->allocated_clusters, kNew / 512);
  EXPECT_LT(m.file_bytes().size(), file_before);
  EXPECT_EQ(m.file_bytes().size(), r->image_end_offset);
  // Growing again shows zeros where the dropped data was.
  ASSERT_OK(loop->run(m.drv->resize(1 << 20, {})));
  m.reopen();
  expect_zeros(*loop, *m.drv, kNew, (1 << 20) - kNew);
  m.close();
  test::expect_clean(*loop, m);
}

TEST(Qcow2Resize, BytesPastAnUnalignedEndReadAsZerosAfterGrowingAgain) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});
  auto all = pattern(1 << 20, 2);
  ASSERT_OK(loop->run(m.drv->write(0, all.data(), all.size())));
  // 512 KiB + 512 ends inside a 64 KiB cluster that keeps its host cluster.
  ASSERT_OK(loop->run(m.drv->resize((512 << 10) + 512, {.allow_shrink = true})));
  ASSERT_OK(loop->run(m.drv->resize(1 << 20, {})));
  m.reopen();
  expect_reads(*loop, *m.drv, 0,
               std::vector<uint8_t>(all.begin(), all.begin() + (512 << 10) + 512));
  expect_zeros(*loop, *m.drv, (512 << 10) + 512, (512 << 10) - 512);
  m.close();
  test::expect_clean(*loop, m);
}

// Every preallocation mode maps every new cluster (block_status says data), the new space reads
// as zeros, and the image is clean.
void grow_with(Preallocation mode, bool reuse_freed_space) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 64 << 10, .cluster_size = 512});
  auto a = pattern(10000, 4);
  ASSERT_OK(loop->run(m.drv->write(0, a.data(), a.size())));
  if (reuse_freed_space) {
    // Leave freed clusters holding old bytes inside the file, for the allocator to reuse.
    auto junk = pattern(40000, 99);
    ASSERT_OK(loop->run(m.drv->write(20000, junk.data(), junk.size())));
    ASSERT_OK(loop->run(m.drv->flush()));
    ASSERT_OK(loop->run(m.drv->resize(20480, {.allow_shrink = true})));
  }
  uint64_t old = m.drv->size();
  ASSERT_OK(loop->run(m.drv->flush()));
  auto r0 = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_OK(r0);
  ASSERT_OK(loop->run(m.drv->resize(1 << 20, {.preallocation = mode})));
  m.reopen();
  for (uint64_t off = old; off < m.drv->size();) {
    auto st = loop->run(m.drv->block_status(off, m.drv->size() - off));
    ASSERT_OK(st);
    ASSERT_EQ(st->kind, BlockStatus::Kind::kData) << "at " << off;
    off += st->length;
  }
  expect_reads(*loop, *m.drv, 0, a);
  expect_zeros(*loop, *m.drv, old, m.drv->size() - old);
  m.close();
  test::expect_clean(*loop, m);
  auto r = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_OK(r);
  EXPECT_EQ(r->allocated_clusters, r0->allocated_clusters + ((1u << 20) - old) / 512);
  // The file covers every mapped cluster.
  EXPECT_GE(m.file_bytes().size(), r->image_end_offset);
}

TEST(Qcow2Resize, PreallocationMetadata) { grow_with(Preallocation::kMetadata, false); }
TEST(Qcow2Resize, PreallocationFalloc) { grow_with(Preallocation::kFalloc, false); }
TEST(Qcow2Resize, PreallocationFull) { grow_with(Preallocation::kFull, false); }
TEST(Qcow2Resize, PreallocationReusingFreedClustersStillReadsZeros) {
  grow_with(Preallocation::kMetadata, true);
  grow_with(Preallocation::kFalloc, true);
}

TEST(Qcow2Resize, PreallocationCannotShrink) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});
  auto s = loop->run(
      m.drv->resize(512 << 10, {.preallocation = Preallocation::kFull, .allow_shrink = true}));
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("Preallocation can't be used for shrinking"),
            std::string::npos);
}

// Host files: falloc and full really reserve the blocks; metadata leaves them sparse.
uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

TEST(Qcow2Resize, PreallocationOnAHostFileAllocatesWhatItPromises) {
  test::TempDir dir;
  for (Preallocation mode :
       {Preallocation::kMetadata, Preallocation::kFalloc, Preallocation::kFull}) {
    auto loop = make_loop();
    std::string p = dir.file("p.qcow2");
    ASSERT_OK(loop->run(create_image(*loop, p, "qcow2", 1 << 20, {})));
    auto d = loop->run(open_image(*loop, p, {}));
    ASSERT_OK(d);
    ASSERT_OK(loop->run((*d)->resize(17 << 20, {.preallocation = mode})));
    ASSERT_OK(loop->run((*d)->close()));
    uint64_t got = allocated_bytes(p);
    if (mode == Preallocation::kMetadata) {
      EXPECT_LT(got, 2u << 20) << "metadata";
    } else {
      EXPECT_GE(got, 16u << 20) << "falloc/full";
    }
  }
}

TEST(RawResize, GrowShrinkAndPreallocation) {
  test::TempDir dir;
  auto loop = make_loop();
  std::string p = dir.file("r.raw");
  ASSERT_OK(loop->run(create_image(*loop, p, "raw", 1 << 20, {})));
  auto d = loop->run(open_image(*loop, p, {.format = "raw"}));
  ASSERT_OK(d);
  BlockDriver& r = **d;
  auto data = pattern(4096, 1);
  ASSERT_OK(loop->run(r.write((1 << 20) - 4096, data.data(), data.size())));
  ASSERT_OK(loop->run(r.resize(3 << 20, {})));
  EXPECT_EQ(r.size(), 3u << 20);
  EXPECT_EQ(std::filesystem::file_size(p), 3u << 20);
  EXPECT_LT(allocated_bytes(p), 1u << 20);  // off: a hole
  ASSERT_OK(loop->run(r.resize(5 << 20, {.preallocation = Preallocation::kFalloc})));
  EXPECT_GE(allocated_bytes(p), 2u << 20);
  ASSERT_OK(loop->run(r.resize(7 << 20, {.preallocation = Preallocation::kFull})));
  EXPECT_GE(allocated_bytes(p), 4u << 20);
  expect_zeros(*loop, r, 1 << 20, 6 << 20);
  auto s = loop->run(r.resize(8 << 20, {.preallocation = Preallocation::kMetadata}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().message(), "Unsupported preallocation mode: metadata");
  s = loop->run(r.resize(1000, {}));
  ASSERT_FALSE(s.has_value());  // raw cannot tell data from holes: every shrink needs permission
  ASSERT_OK(loop->run(r.resize(1001 + 4095, {.allow_shrink = true})));
  EXPECT_EQ(std::filesystem::file_size(p), 5096u);
  ASSERT_OK(loop->run(r.close()));
  auto again = loop->run(open_image(*loop, p, {.format = "raw"}));
  ASSERT_OK(again);
  EXPECT_EQ((*again)->size(), 5096u);
}

// ---- ops: qemu-img resize's rules --------------------------------------------------------

TEST(ResizeOps, SizeArgumentsAsQemuImgReadsThem) {
  auto c = parse_size_change("+1.5k");
  ASSERT_OK(c);
  EXPECT_EQ(c->sign, 1);
  EXPECT_EQ(c->amount, 1536u);
  c = parse_size_change("-2M");
  ASSERT_OK(c);
  EXPECT_EQ(c->sign, -1);
  EXPECT_EQ(c->amount, 2u << 20);
  EXPECT_FALSE(parse_size_change("xyz").has_value());
  EXPECT_FALSE(parse_size_change("+-1M").has_value());
  auto big = parse_size_change("20E");
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().message(), "Value '20E' is out of range for parameter 'size'");
  // 9E parses (below 2^64) and then is not a positive int64_t, as in qemu-img.
  c = parse_size_change("9E");
  ASSERT_OK(c);
  EXPECT_FALSE(resolve_size_change(1 << 20, *c).has_value());
  EXPECT_EQ(*resolve_size_change(1 << 20, {-1, 512 << 10}), 512u << 10);
  EXPECT_EQ(resolve_size_change(1 << 20, {-1, 1 << 20}).error().message(),
            "New image size must be positive");
  EXPECT_EQ(*resolve_size_change(1 << 20, {1, 1 << 20}), 2u << 20);
}

TEST(ResizeOps, ShrinkNeedsPermissionAndPreallocationNeedsGrowth) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});
  auto s = loop->run(resize_image(*m.drv, 512 << 10, {}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().message(), "Use the --shrink option to perform a shrink operation.");
  s = loop->run(resize_image(*m.drv, 1 << 20, {.preallocation = Preallocation::kFalloc}));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().message(), "Preallocation can only be used for growing images");
  ASSERT_OK(loop->run(resize_image(*m.drv, 512 << 10, {.allow_shrink = true})));
  EXPECT_EQ(m.drv->size(), 512u << 10);
}

}  // namespace
}  // namespace img
