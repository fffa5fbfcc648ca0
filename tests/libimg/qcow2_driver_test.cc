// The qcow2 driver through BlockDriver: reads, writes, copy-on-write edges, zero clusters,
// discard, reopen, concurrency, and what a corrupt or hostile image gets.
#include <random>
#include <vector>

#include "img/bytes.h"
#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::qcow2_copied_flag;
using test::qcow2_l1_offset_mask;

TEST(Qcow2Driver, FreshImageReadsZeros) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 10 << 20});
  std::vector<uint8_t> buf(70000, 0xff);
  ASSERT_OK(loop->run(m.drv->read(12345, buf.data(), buf.size())));
  EXPECT_EQ(buf, std::vector<uint8_t>(buf.size(), 0));
}

TEST(Qcow2Driver, UnalignedWriteAcrossClustersReadsBackAndSurvivesReopen) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 10 << 20, .cluster_size = 4096});
  std::vector<uint8_t> data(20000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  ASSERT_OK(loop->run(m.drv->write(4000, data.data(), data.size())));
  std::vector<uint8_t> back(data.size() + 200);
  ASSERT_OK(loop->run(m.drv->read(3900, back.data(), back.size())));
  for (size_t i = 0; i < 100; ++i) ASSERT_EQ(back[i], 0) << i;
  for (size_t i = 0; i < data.size(); ++i) ASSERT_EQ(back[100 + i], data[i]) << i;
  for (size_t i = 100 + data.size(); i < back.size(); ++i) ASSERT_EQ(back[i], 0) << i;
  m.reopen();
  std::fill(back.begin(), back.end(), 0xee);
  ASSERT_OK(loop->run(m.drv->read(4000, back.data(), data.size())));
  EXPECT_EQ(0, memcmp(back.data(), data.data(), data.size()));
  test::expect_clean(*loop, m);
}

TEST(Qcow2Driver, WriteZeroesAndDiscardReadAsZeros) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 4 << 20, .cluster_size = 65536});
  std::vector<uint8_t> data(1 << 20, 0x5a);
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  ASSERT_OK(loop->run(m.drv->write_zeroes(1000, 200000, {})));
  ASSERT_OK(loop->run(m.drv->discard(300000, 400000)));
  std::vector<uint8_t> back(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, back.data(), back.size())));
  for (size_t i = 0; i < back.size(); ++i) {
    bool zeroed = (i >= 1000 && i < 201000);
    // discard frees whole clusters only: [327680, 655360)
    bool discarded = (i >= 327680 && i < 655360);
    ASSERT_EQ(back[i], (zeroed || discarded) ? 0 : 0x5a) << i;
  }
  m.reopen();
  test::expect_clean(*loop, m);
}

TEST(Qcow2Driver, ManyConcurrentWritersGetDistinctClusters) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 64 << 20, .cluster_size = 4096}, /*async_file=*/true);
  constexpr int kN = 64;
  std::vector<std::vector<uint8_t>> bufs(kN);
  for (int i = 0; i < kN; ++i) {
    bufs[i].assign(6000, static_cast<uint8_t>(i + 1));
    loop->spawn([](BlockDriver* d, uint64_t off, std::vector<uint8_t>* b) -> Task<void> {
      auto s = co_await d->write(off, b->data(), b->size());
      EXPECT_TRUE(s.has_value()) << s.error().to_string();
    }(m.drv.get(), uint64_t(i) * 1000003 % (60 << 20), &bufs[i]));
  }
  loop->drain();
  for (int i = 0; i < kN; ++i) {
    std::vector<uint8_t> back(6000);
    ASSERT_OK(loop->run(m.drv->read(uint64_t(i) * 1000003 % (60 << 20), back.data(), 6000)));
    // Later writers may overlap earlier ones; check the non-overlapped ones fully.
    bool overlapped = false;
    for (int j = 0; j < kN; ++j) {
      if (j == i) continue;
      uint64_t a = uint64_t(i) * 1000003 % (60 << 20), b = uint64_t(j) * 1000003 % (60 << 20);
      if (a < b + 6000 && b < a + 6000) overlapped = true;
    }
    if (!overlapped) {
      EXPECT_EQ(back, bufs[i]) << i;
    }
  }
  m.reopen();
  test::expect_clean(*loop, m);
}

TEST(Qcow2Driver, CorruptBitOpensReadOnlyOnly) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20});
  m.close();
  m.file_bytes()[72 + 7] |= 2;  // incompatible_features: corrupt
  auto rw = m.open({});
  ASSERT_FALSE(rw);
  EXPECT_EQ(rw.error().code(), ErrorCode::kReadOnly);
  EXPECT_NE(rw.error().message().find("corrupt"), std::string::npos);
  auto ro = m.open({.read_only = true});
  ASSERT_OK(ro);
}

TEST(Qcow2Driver, L2EntryPointingAtMetadataMarksCorrupt) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = 65536});
  std::vector<uint8_t> data(65536, 1);
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  m.close();
  // Point guest cluster 0 at the header (host offset 0 is never data): find the L2 table.
  auto& b = m.file_bytes();
  uint64_t l1_off = load_be64(&b[40]);
  uint64_t l2_off = load_be64(&b[l1_off]) & qcow2_l1_offset_mask();
  store_be64(&b[l2_off], qcow2_copied_flag() | load_be64(&b[48]));  // refcount table
  ASSERT_OK(m.open({}));
  auto s = loop->run(m.drv->write(0, data.data(), 512));
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
  EXPECT_TRUE(b[72 + 7] & 2) << "corrupt bit set in the header";
}

}  // namespace
}  // namespace img

namespace img {
namespace {

// Regression: with lazy_refcounts, a second concurrent writer went ahead while the first was
// still writing the dirty bit, so its metadata could reach the disk before the bit did.
TEST(Qcow2Driver, LazyRefcountsConcurrentWritersWaitForDurableDirtyBit) {
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = 16 << 20, .cluster_size = 4096, .lazy_refcounts = true},
                   /*async_file=*/true);
  std::vector<uint8_t> buf(8192, 9);
  int done = 0;
  for (int i = 0; i < 8; ++i) {
    loop->spawn([](test::MemImage* m, std::vector<uint8_t>* b, int i, int* done) -> Task<void> {
      auto s = co_await m->drv->write(uint64_t(i) << 20, b->data(), b->size());
      EXPECT_TRUE(s.has_value());
      // Once any write has completed, a crash must find the image marked dirty.
      EXPECT_TRUE(m->fault_file().durable_bytes()[72 + 7] & 1) << "writer " << i;
      ++*done;
    }(&m, &buf, i, &done));
  }
  loop->drain();
  EXPECT_EQ(done, 8);
}

}  // namespace
}  // namespace img
