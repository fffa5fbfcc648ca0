// RefCounts (qcow2/check_refs.h) against a plain map model, and the bitmap directory decoder
// (qcow2/bitmap.h) on a directory qemu-img wrote and on every field corrupted in turn.
#include "qcow2/check_refs.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <map>

#include "img/bytes.h"
#include "qcow2/bitmap.h"

namespace img::qcow2 {
namespace {

RC_GTEST_PROP(RefCounts, AgreesWithAMapModel, ()) {
  const uint64_t max = *rc::gen::element<uint64_t>(1, 3, 0xffff, 0x1ffff, UINT64_MAX);
  RefCounts refs(max);
  std::map<uint64_t, uint64_t> model;
  // Clusters spread over a few pages, with repeats, so pages widen and wide counts appear.
  const auto ops = *rc::gen::container<std::vector<std::pair<uint64_t, uint32_t>>>(
      rc::gen::pair(rc::gen::inRange<uint64_t>(0, 4 * RefCounts::kPageClusters),
                    rc::gen::inRange<uint32_t>(0, 4)));
  for (auto [c, op] : ops) {
    if (op < 3) {
      bool ok = refs.inc(c);
      RC_ASSERT(ok == (model[c] < max));
      if (ok) ++model[c];
    } else {
      const uint64_t v = std::min<uint64_t>(max, c % 3 == 0 ? 0x10000 + c : c % 5);
      refs.set(c, v);
      model[c] = v;
    }
  }
  uint64_t end = 0;
  for (auto [c, v] : model) {
    RC_ASSERT(refs.get(c) == v);
    if (v) end = c + 1;
  }
  RC_ASSERT(refs.end() == end);
}

TEST(RefCounts, SparseClustersCostPagesNotTheRange) {
  RefCounts refs(0xffff);
  EXPECT_TRUE(refs.inc(0));
  EXPECT_TRUE(refs.inc(30ull << 30));  // 30 Gi clusters in: one more page, nothing between
  EXPECT_FALSE(refs.page_empty(0));
  EXPECT_TRUE(refs.page_empty(1));
  EXPECT_EQ(refs.end(), (30ull << 30) + 1);
}

TEST(RefCounts, OverflowAtTheRefcountWidth) {
  RefCounts one_bit(1);
  EXPECT_TRUE(one_bit.inc(7));
  EXPECT_FALSE(one_bit.inc(7));
  EXPECT_EQ(one_bit.get(7), 1u);
}

// A directory with two bitmaps, laid out as the spec's "Bitmap directory" says.
std::vector<uint8_t> directory(const Header& h) {
  std::vector<uint8_t> d;
  auto entry = [&](uint64_t table, uint32_t flags, const std::string& name) {
    std::vector<uint8_t> e(24 + align_up(name.size(), 8) + 0, 0);
    store_be64(e.data(), table);
    store_be32(e.data() + 8, 1);
    store_be32(e.data() + 12, flags);
    e[16] = 1;
    e[17] = 16;
    store_be16(e.data() + 18, static_cast<uint16_t>(name.size()));
    std::copy(name.begin(), name.end(), e.begin() + 24);
    e.resize(align_up(24 + name.size(), 8));
    d.insert(d.end(), e.begin(), e.end());
  };
  entry(5 * h.cluster_size(), kBitmapFlagAuto, "b0");
  entry(6 * h.cluster_size(), kBitmapFlagInUse, "second");
  return d;
}

TEST(BitmapDirectory, DecodesEveryField) {
  Header h;
  h.size = 64ull << 20;
  auto d = directory(h);
  auto r = decode_bitmap_directory(d, 2, h);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].name, "b0");
  EXPECT_EQ((*r)[0].table_offset, 5 * h.cluster_size());
  EXPECT_EQ((*r)[1].name, "second");
  EXPECT_EQ((*r)[1].flags, kBitmapFlagInUse);
  EXPECT_EQ((*r)[1].entry_offset, 32u);
}

TEST(BitmapDirectory, RejectsEachCorruptField) {
  Header h;
  h.size = 64ull << 20;
  struct Case {
    const char* what;
    size_t off;
    int bytes;
    uint64_t value;
  };
  const Case cases[] = {
      {"reserved flag bits", 12, 4, 1u << 5},
      {"unknown bitmap type", 16, 1, 2},
      {"granularity_bits", 17, 1, 8},
      {"granularity_bits", 17, 1, 32},
      {"name size", 18, 2, 0},
      {"extra data", 20, 4, 8},
      {"not cluster aligned", 0, 8, 5 * 65536 + 512},
      {"table size", 8, 4, 0},
      {"too small for the virtual size", 8, 4, 1},
  };
  for (const Case& c : cases) {
    auto d = directory(h);
    if (std::string(c.what) == "too small for the virtual size") {
      h.size = 1ull << 50;
    } else {
      h.size = 64ull << 20;
    }
    for (int i = 0; i < c.bytes; ++i) d[c.off + i] = uint8_t(c.value >> (8 * (c.bytes - 1 - i)));
    auto r = decode_bitmap_directory(d, 2, h);
    ASSERT_FALSE(r.has_value()) << c.what;
    EXPECT_NE(r.error().message().find(c.what), std::string::npos)
        << c.what << ": " << r.error().message();
  }
  h.size = 64ull << 20;
  auto d = directory(h);
  EXPECT_FALSE(decode_bitmap_directory(d, 3, h).has_value());  // more entries than bytes
  d.resize(d.size() + 8);
  EXPECT_FALSE(decode_bitmap_directory(d, 2, h).has_value());  // bytes left over
}

}  // namespace
}  // namespace img::qcow2
