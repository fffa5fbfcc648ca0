// Discard and write-zeroes against hostile and shared mappings: they change what the file holds
// at offsets an L2 entry names, so they get the same metadata-overlap check as writes and must
// never destroy data another reference still needs.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "img/bytes.h"
#include "qcow2_test_util.h"

namespace img {
namespace {

using test::make_loop;

constexpr uint64_t kCs = 65536;

struct Layout {
  uint64_t l2_off;
  uint64_t reftable_off;
};

Layout layout_of(std::vector<uint8_t>& b) {
  uint64_t l1_off = load_be64(&b[40]);
  return {load_be64(&b[l1_off]) & test::qcow2_l1_offset_mask(), load_be64(&b[48])};
}

// The 16-bit refcount of host cluster c (one refcount block covers the whole small image).
uint8_t* refcount_entry(std::vector<uint8_t>& b, uint64_t c) {
  uint64_t block = load_be64(&b[load_be64(&b[48])]);
  return &b[block + 2 * c];
}

// Regression: an L2 entry naming the refcount table made discard punch a hole there, zeroing
// every refcount of the image.
TEST(Qcow2Discard, EntryPointingAtRefcountTableMarksCorruptAndPunchesNothing) {
  for (bool discard : {true, false}) {
    SCOPED_TRACE(discard ? "discard" : "write-zeroes with unmap");
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = kCs});
    std::vector<uint8_t> data(kCs, 1);
    ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
    m.close();
    auto& b = m.file_bytes();
    Layout l = layout_of(b);
    store_be64(&b[l.l2_off], test::qcow2_copied_flag() | l.reftable_off);
    std::vector<uint8_t> reftable_before(b.begin() + l.reftable_off,
                                         b.begin() + l.reftable_off + kCs);
    ASSERT_OK(m.open({}));
    auto s = discard ? loop->run(m.drv->discard(0, kCs))
                     : loop->run(m.drv->write_zeroes(0, kCs, {.may_unmap = true}));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code(), ErrorCode::kCorruption) << s.error().to_string();
    EXPECT_TRUE(b[72 + 7] & 2) << "corrupt bit set in the header";
    m.abandon();
    std::vector<uint8_t> reftable_after(b.begin() + l.reftable_off,
                                        b.begin() + l.reftable_off + kCs);
    EXPECT_EQ(reftable_before, reftable_after) << "the refcount table was changed";
  }
}

// A data cluster whose refcount is 2 (shared with a snapshot, COPIED clear) keeps its bytes in
// the file when this image discards it: only the last reference may punch the hole.
TEST(Qcow2Discard, SharedClusterIsNotPunched) {
  for (bool discard : {true, false}) {
    SCOPED_TRACE(discard ? "discard" : "write-zeroes with unmap");
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = kCs});
    std::vector<uint8_t> data(kCs, 0x5a);
    ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
    m.close();
    auto& b = m.file_bytes();
    Layout l = layout_of(b);
    uint64_t e = load_be64(&b[l.l2_off]);
    uint64_t host = e & test::qcow2_l1_offset_mask();
    store_be64(&b[l.l2_off], host);  // COPIED clear: shared
    store_be16(refcount_entry(b, host / kCs), 2);
    ASSERT_OK(m.open({}));
    auto s = discard ? loop->run(m.drv->discard(0, kCs))
                     : loop->run(m.drv->write_zeroes(0, kCs, {.may_unmap = true}));
    ASSERT_OK(s);
    std::vector<uint8_t> back(kCs, 1);
    ASSERT_OK(loop->run(m.drv->read(0, back.data(), kCs)));
    EXPECT_EQ(back, std::vector<uint8_t>(kCs, 0)) << "the guest sees zeros";
    m.close();
    EXPECT_EQ(load_be16(refcount_entry(b, host / kCs)), 1) << "one reference dropped";
    EXPECT_EQ(std::vector<uint8_t>(b.begin() + host, b.begin() + host + kCs), data)
        << "the other reference's data is still in the file";
  }
}

// The last reference does punch: the host cluster's bytes read as zeros in the file.
TEST(Qcow2Discard, LastReferenceIsPunched) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = kCs});
  std::vector<uint8_t> data(kCs, 0x5a);
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  ASSERT_OK(loop->run(m.drv->flush()));
  auto& b = m.file_bytes();
  uint64_t host = load_be64(&b[layout_of(b).l2_off]) & test::qcow2_l1_offset_mask();
  ASSERT_OK(loop->run(m.drv->discard(0, kCs)));
  m.close();
  ASSERT_GE(b.size(), host + kCs);
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + host, b.begin() + host + kCs),
            std::vector<uint8_t>(kCs, 0));
  test::expect_clean(*loop, m);
}

// Version 2 has no zero flag: write-zeroes over a shared cluster must copy-on-write instead of
// zeroing the shared host cluster in place.
TEST(Qcow2Discard, V2WriteZeroesOnSharedClusterCopiesOnWrite) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .version = 2, .cluster_size = kCs});
  std::vector<uint8_t> data(kCs, 0x77);
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  m.close();
  auto& b = m.file_bytes();
  Layout l = layout_of(b);
  uint64_t host = load_be64(&b[l.l2_off]) & test::qcow2_l1_offset_mask();
  store_be64(&b[l.l2_off], host);
  store_be16(refcount_entry(b, host / kCs), 2);
  ASSERT_OK(m.open({}));
  ASSERT_OK(loop->run(m.drv->write_zeroes(0, kCs, {})));
  std::vector<uint8_t> back(kCs, 1);
  ASSERT_OK(loop->run(m.drv->read(0, back.data(), kCs)));
  EXPECT_EQ(back, std::vector<uint8_t>(kCs, 0));
  m.close();
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + host, b.begin() + host + kCs), data)
      << "the shared cluster keeps its data";
  uint64_t now = load_be64(&b[l.l2_off]);
  EXPECT_NE(now & test::qcow2_l1_offset_mask(), host) << "the guest cluster moved";
  EXPECT_TRUE(now & test::qcow2_copied_flag());
  EXPECT_EQ(load_be16(refcount_entry(b, host / kCs)), 1);
}

}  // namespace
}  // namespace img

namespace img {
namespace {

// Regression: discard edited an L2 table shared with a snapshot (L1 entry without COPIED) in
// place, so the snapshot lost its data too.
// Regression (found by the chain model test): write-zeroes over a compressed cluster of a
// version 2 image failed with "compressed clusters are not supported yet".
TEST(Qcow2Discard, V2WriteZeroesOverACompressedClusterWritesZeros) {
  for (bool unmap : {false, true}) {
    SCOPED_TRACE(unmap ? "unmap" : "no unmap");
    auto loop = make_loop();
    test::MemImage m(*loop, {.size = 4 * kCs, .version = 2, .cluster_size = kCs});
    std::vector<uint8_t> data(4 * kCs);
    for (uint64_t i = 0; i < data.size(); ++i) data[i] = uint8_t(1 + i / 100);  // compresses
    ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
    auto st = loop->run(m.drv->block_status(kCs, kCs));
    ASSERT_OK(st);
    ASSERT_TRUE(st->compressed);
    // A whole cluster and the edges of two more.
    ASSERT_OK(loop->run(m.drv->write_zeroes(kCs - 100, kCs + 200, {.may_unmap = unmap})));
    std::fill(data.begin() + kCs - 100, data.begin() + 2 * kCs + 100, 0);
    m.reopen();
    std::vector<uint8_t> got(data.size());
    ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
    EXPECT_TRUE(got == data);
    m.close();
    test::expect_clean(*loop, m);
  }
}

TEST(Qcow2Discard, SharedL2TableIsLeftAlone) {
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = 1 << 20, .cluster_size = kCs});
  std::vector<uint8_t> data(kCs, 0x33);
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  m.close();
  auto& b = m.file_bytes();
  uint64_t l1_off = load_be64(&b[40]);
  uint64_t l2 = load_be64(&b[l1_off]) & test::qcow2_l1_offset_mask();
  store_be64(&b[l1_off], l2);  // COPIED clear: the table is shared
  store_be16(refcount_entry(b, l2 / kCs), 2);
  std::vector<uint8_t> table(b.begin() + l2, b.begin() + l2 + kCs);
  ASSERT_OK(m.open({}));
  // Discard is advisory: the shared table stays as it is, and so does the data.
  ASSERT_OK(loop->run(m.drv->discard(0, kCs)));
  std::vector<uint8_t> back(kCs);
  ASSERT_OK(loop->run(m.drv->read(0, back.data(), kCs)));
  EXPECT_EQ(back, data);
  // Zeroing copies the table first (copy-on-write of a shared L2 table): the active image
  // reads zeros, the shared table is untouched.
  ASSERT_OK(loop->run(m.drv->write_zeroes(0, kCs, {})));
  ASSERT_OK(loop->run(m.drv->read(0, back.data(), kCs)));
  EXPECT_EQ(back, std::vector<uint8_t>(kCs, 0));
  m.close();
  EXPECT_EQ(std::vector<uint8_t>(b.begin() + l2, b.begin() + l2 + kCs), table);
  EXPECT_NE(load_be64(&b[l1_off]) & test::qcow2_l1_offset_mask(), l2);
}

}  // namespace
}  // namespace img
