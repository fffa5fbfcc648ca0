// Internal snapshots in libimg (img/snapshot.h): create / apply / delete keep every snapshot's
// data and the active data apart, refcounts and COPIED flags right (our check, which agrees
// with qemu-img check, finds nothing), ids as QEMU assigns them; hostile snapshot tables are
// refused with an error naming the problem.
#include <cstring>
#include <vector>

#include "img/image.h"
#include "img/snapshot.h"
#include "qcow2/snapshot_table.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

constexpr uint64_t kSize = 4 << 20;

using test::read_all;

void write_pattern(IoLoop& loop, BlockDriver& d, std::vector<uint8_t>& model, uint64_t off,
                   uint64_t len, uint8_t seed) {
  std::vector<uint8_t> buf(len);
  for (uint64_t i = 0; i < len; ++i) buf[i] = uint8_t(seed + i * 7 + (i >> 9));
  ASSERT_OK(loop.run(d.write(off, buf.data(), len)));
  std::memcpy(model.data() + off, buf.data(), len);
}

std::vector<std::string> ids(const BlockDriver& d) {
  std::vector<std::string> out;
  auto l = list_snapshots(d);
  EXPECT_TRUE(l.has_value());
  if (l)
    for (auto& s : *l) out.push_back(s.id);
  return out;
}

class SnapshotTest : public ::testing::TestWithParam<Qcow2CreateOptions> {};

TEST_P(SnapshotTest, SnapshotsKeepTheirDataWhileTheActiveImageChanges) {
  auto loop = make_loop();
  test::MemImage m(*loop, GetParam());
  const uint64_t cs = GetParam().cluster_size;
  std::vector<uint8_t> a(kSize, 0);
  write_pattern(*loop, *m.drv, a, 0, kSize / 2, 1);
  write_pattern(*loop, *m.drv, a, kSize - 3 * cs - 100, 2 * cs, 2);
  auto s1 = loop->run(create_snapshot(*m.drv, {.name = "first"}));
  ASSERT_TRUE(s1.has_value()) << s1.error().to_string();
  EXPECT_EQ(s1->id, "1");
  EXPECT_EQ(s1->disk_size, kSize);
  EXPECT_NE(s1->date_sec, 0u);

  // Overwrite (shared clusters: copy-on-write of L2 tables and data), zero, discard, write new.
  std::vector<uint8_t> b = a;
  write_pattern(*loop, *m.drv, b, 100, 3 * cs, 3);
  write_pattern(*loop, *m.drv, b, kSize / 2 + cs, cs / 2, 4);
  ASSERT_OK(loop->run(m.drv->write_zeroes(kSize / 4, 2 * cs, {})));
  std::fill_n(b.begin() + kSize / 4, 2 * cs, 0);
  EXPECT_EQ(read_all(*loop, *m.drv), b);
  ASSERT_OK(loop->run(m.drv->flush()));
  test::expect_clean(*loop, m);

  auto s2 = loop->run(create_snapshot(*m.drv, {.name = "second"}));
  ASSERT_TRUE(s2.has_value()) << s2.error().to_string();
  EXPECT_EQ(s2->id, "2");
  std::vector<uint8_t> c = b;
  write_pattern(*loop, *m.drv, c, 0, kSize, 5);
  ASSERT_OK(loop->run(m.drv->flush()));
  test::expect_clean(*loop, m);

  m.reopen();  // everything below goes through a freshly read table
  ASSERT_EQ(ids(*m.drv), (std::vector<std::string>{"1", "2"}));
  ASSERT_OK(loop->run(apply_snapshot(*m.drv, "first")));
  EXPECT_EQ(read_all(*loop, *m.drv), a);
  test::expect_clean(*loop, m);
  ASSERT_OK(loop->run(apply_snapshot(*m.drv, "2")));
  EXPECT_EQ(read_all(*loop, *m.drv), b);
  // Writing after apply must leave the snapshot alone.
  std::vector<uint8_t> d = b;
  write_pattern(*loop, *m.drv, d, cs, cs, 6);
  ASSERT_OK(loop->run(apply_snapshot(*m.drv, "2")));
  EXPECT_EQ(read_all(*loop, *m.drv), b);

  ASSERT_OK(loop->run(delete_snapshot(*m.drv, "1")));
  test::expect_clean(*loop, m);
  EXPECT_EQ(read_all(*loop, *m.drv), b);
  ASSERT_OK(loop->run(delete_snapshot(*m.drv, "2")));
  // No snapshot left: every refcount back to one, COPIED everywhere again (check says so), and
  // writes go in place again.
  test::expect_clean(*loop, m);
  EXPECT_TRUE(ids(*m.drv).empty());
  m.reopen();
  EXPECT_EQ(read_all(*loop, *m.drv), b);
  test::expect_clean(*loop, m);
}

TEST_P(SnapshotTest, IdsAreAssignedAsQemuAssignsThem) {
  auto loop = make_loop();
  test::MemImage m(*loop, GetParam());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "s"})));
  ASSERT_OK(loop->run(delete_snapshot(*m.drv, "2")));
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "s"})));
  EXPECT_EQ(ids(*m.drv), (std::vector<std::string>{"1", "3", "4"}));
  ASSERT_OK(loop->run(delete_snapshot(*m.drv, "4")));
  ASSERT_OK(loop->run(delete_snapshot(*m.drv, "3")));
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "s"})));
  EXPECT_EQ(ids(*m.drv), (std::vector<std::string>{"1", "2"}));
  // A taken id is refused; names may repeat.
  auto dup = loop->run(create_snapshot(*m.drv, {.name = "x", .id = "2"}));
  EXPECT_FALSE(dup.has_value());
  auto missing = loop->run(delete_snapshot(*m.drv, "9"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  m.close();
  test::expect_clean(*loop, m);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, SnapshotTest,
    ::testing::Values(
        Qcow2CreateOptions{.size = kSize}, Qcow2CreateOptions{.size = kSize, .version = 2},
        Qcow2CreateOptions{.size = kSize, .cluster_size = 512, .refcount_bits = 4},
        Qcow2CreateOptions{
            .size = kSize, .cluster_size = 4096, .refcount_bits = 64, .lazy_refcounts = true}),
    [](const auto& info) {
      const auto& o = info.param;
      return "v" + std::to_string(o.version) + "_c" + std::to_string(o.cluster_size) + "_rc" +
             std::to_string(o.refcount_bits) + (o.lazy_refcounts ? "_lazy" : "");
    });

// refcount_bits=1 cannot count a second reference: create fails before anything is committed.
TEST(SnapshotLimits, OneBitRefcountsRefuseASnapshotAndLeaveTheImageAsItWas) {
  auto loop = make_loop();
  test::MemImage m(*loop, {.size = kSize, .refcount_bits = 1});
  std::vector<uint8_t> a(kSize, 0);
  write_pattern(*loop, *m.drv, a, 0, 1 << 20, 9);
  auto r = loop->run(create_snapshot(*m.drv, {.name = "x"}));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("refcount_bits=1"), std::string::npos) << r.error().message();
  EXPECT_TRUE(ids(*m.drv).empty());
  m.reopen();
  EXPECT_EQ(read_all(*loop, *m.drv), a);
  m.close();
  test::expect_clean(*loop, m);  // and the clusters it had taken went back: no leaks
}

TEST(SnapshotLimits, RawImagesHaveNoSnapshots) {
  auto loop = make_loop();
  auto f = make_mem_file();
  auto d = loop->run(open_image_file(*loop, std::move(f), {.format = "raw"}));
  ASSERT_TRUE(d.has_value());
  auto l = list_snapshots(**d);
  ASSERT_FALSE(l.has_value());
  EXPECT_EQ(l.error().code(), ErrorCode::kNotSupported);
}

// --- hostile snapshot tables ---------------------------------------------------------------------

// An image with one snapshot whose table the test then damages.
struct Damaged {
  std::unique_ptr<IoLoop> loop = make_loop();
  std::unique_ptr<test::MemImage> m;
  uint64_t table = 0;
  Damaged() {
    m = std::make_unique<test::MemImage>(*loop, Qcow2CreateOptions{.size = kSize});
    std::vector<uint8_t> a(kSize, 0);
    write_pattern(*loop, *m->drv, a, 0, 1 << 20, 1);
    EXPECT_TRUE(loop->run(create_snapshot(*m->drv, {.name = "snap"})).has_value());
    m->close();
    table = load_be64(m->file_bytes().data() + 64);
  }
  uint8_t* at(uint64_t off) { return m->file_bytes().data() + off; }
  std::string open_error() {
    auto s = m->open({});
    return s ? "" : s.error().to_string();
  }
};

TEST(SnapshotHostile, AbsurdCountIsRefused) {
  Damaged d;
  store_be32(d.at(60), 70000);
  EXPECT_NE(d.open_error().find("nb_snapshots 70000 exceeds 65536"), std::string::npos)
      << d.open_error();
}

TEST(SnapshotHostile, TablePastTheEndOfTheFileIsRefused) {
  Damaged d;
  store_be64(d.at(64), uint64_t(1) << 40);
  EXPECT_NE(d.open_error().find("snapshots_offset"), std::string::npos) << d.open_error();
}

TEST(SnapshotHostile, TableOverTheHeaderIsRefused) {
  Damaged d;
  store_be64(d.at(64), 0);
  EXPECT_NE(d.open_error().find("overlaps the header"), std::string::npos) << d.open_error();
}

TEST(SnapshotHostile, TooMuchExtraDataIsRefused) {
  Damaged d;
  store_be32(d.at(d.table + 36), 4096);
  EXPECT_NE(d.open_error().find("too much extra metadata in snapshot table entry 0"),
            std::string::npos)
      << d.open_error();
}

// Entries whose id and name lengths say 64 KiB each: 512 of them pass QEMU's 64 MiB table
// limit, which is an error, found while decoding (never more than the limit is read).
TEST(SnapshotHostile, LengthsOverflowingTheTableAreRefused) {
  const uint64_t entry = align_up(40 + 16 + 2 * 65535, 8);
  std::vector<uint8_t> buf(512 * entry, 0);
  for (uint64_t i = 0; i < 512; ++i) {
    uint8_t* p = buf.data() + i * entry;
    store_be32(p + 36, 16);
    store_be16(p + 12, 65535);
    store_be16(p + 14, 65535);
  }
  uint64_t bytes = 0;
  auto r = qcow2::decode_snapshot_table(buf, 512, kSize, &bytes);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("snapshot table is too big (entry 511"), std::string::npos)
      << r.error().message();
  // 511 of them fit.
  EXPECT_TRUE(qcow2::decode_snapshot_table(buf, 511, kSize, &bytes).has_value());
}

TEST(SnapshotHostile, ShortExtraDataReadsAsQemuReadsIt) {
  Damaged d;
  // extra_data_size 8 (no disk_size): QEMU takes the image's size and opens the image.
  const uint64_t e = d.table;
  std::vector<uint8_t> ent(d.at(e), d.at(e) + 40 + 24 + 1 + 4);
  store_be32(ent.data() + 36, 8);
  std::vector<uint8_t> out(ent.begin(), ent.begin() + 48);
  out.insert(out.end(), ent.begin() + 64, ent.end());
  std::memcpy(d.at(e), out.data(), out.size());
  ASSERT_EQ(d.open_error(), "");
  auto l = list_snapshots(*d.m->drv);
  ASSERT_TRUE(l.has_value());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].name, "snap");
  EXPECT_EQ((*l)[0].disk_size, kSize);
  EXPECT_FALSE((*l)[0].icount.has_value());
}

TEST(SnapshotHostile, InvalidSnapshotL1IsRefusedByApplyAndDelete) {
  Damaged d;
  store_be64(d.at(d.table), 12345);  // unaligned
  ASSERT_EQ(d.open_error(), "");
  auto a = d.loop->run(apply_snapshot(*d.m->drv, "snap"));
  ASSERT_FALSE(a.has_value());
  EXPECT_NE(a.error().message().find("L1 table offset 0x3039"), std::string::npos)
      << a.error().message();
  auto r = d.loop->run(delete_snapshot(*d.m->drv, "1"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(ids(*d.m->drv), (std::vector<std::string>{"1"}));
}

TEST(SnapshotHostile, HugeSnapshotL1IsRefused) {
  Damaged d;
  store_be32(d.at(d.table + 8), 0x7fffffff);
  ASSERT_EQ(d.open_error(), "");
  auto a = d.loop->run(apply_snapshot(*d.m->drv, "snap"));
  ASSERT_FALSE(a.has_value());
  EXPECT_NE(a.error().message().find("exceeds the 32 MiB limit"), std::string::npos)
      << a.error().message();
}

}  // namespace
}  // namespace img
