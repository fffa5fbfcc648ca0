// load_snapshot_tmp (img/snapshot.h, QEMU's bdrv_snapshot_load_tmp behind qemu-img convert -l
// and qemu-nbd -l): a read-only image reads as the snapshot chosen by parse_snapshot_param's
// selector, at the image's current size, and nothing in the file changes; a hostile snapshot L1
// table, a writable image and a raw one are refused with an error naming the problem.
#include <cstring>
#include <vector>

#include "img/bytes.h"
#include "img/image.h"
#include "img/snapshot.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

constexpr uint64_t kSize = 4 << 20;

using test::read_all;

void fill(IoLoop& loop, BlockDriver& d, uint64_t off, uint64_t len, uint8_t byte) {
  std::vector<uint8_t> buf(len, byte);
  ASSERT_OK(loop.run(d.write(off, buf.data(), len)));
}

TEST(SnapshotParam, ParsesQemusForms) {
  auto bare = parse_snapshot_param("first");
  ASSERT_TRUE(bare.has_value());
  EXPECT_TRUE(bare->id_or_name);
  EXPECT_EQ(bare->id, "first");
  EXPECT_EQ(bare->name, "first");
  auto both = parse_snapshot_param("snapshot.id=2,snapshot.name=b");
  ASSERT_TRUE(both.has_value());
  EXPECT_FALSE(both->id_or_name);
  EXPECT_EQ(both->id, "2");
  EXPECT_EQ(both->name, "b");
  auto name = parse_snapshot_param("snapshot.name=");  // given, and empty
  ASSERT_TRUE(name.has_value());
  EXPECT_FALSE(name->id.has_value());
  EXPECT_EQ(name->name, "");
  auto empty = parse_snapshot_param("");  // a bare key that is empty
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->id_or_name);
  for (const char* bad : {"snapshot.foo=1", "snapshot.name=a,x=1", "snapshot."}) {
    auto r = parse_snapshot_param(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().message().rfind("Invalid parameter '", 0), 0u) << r.error().message();
  }
}

// Two snapshots, then the active image changes: each view reads as its snapshot did, and the
// file is byte for byte what it was. (A snapshot smaller than the image, after qemu-img resize,
// is in tests/img/snapshot_test.cc: libimg does not resize an image with snapshots.)
TEST(SnapshotView, EachSnapshotReadsAsItWasTaken) {
  auto loop = make_loop();
  test::MemImage m(*loop, Qcow2CreateOptions{.size = 4 * kSize});
  fill(*loop, *m.drv, 0, 1 << 20, 1);
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "first"})).has_value());
  fill(*loop, *m.drv, 0, 512 << 10, 2);
  fill(*loop, *m.drv, 3 << 20, 64 << 10, 3);
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "second"})).has_value());
  fill(*loop, *m.drv, 0, 64 << 10, 4);
  fill(*loop, *m.drv, 10 << 20, 64 << 10, 5);
  m.close();
  const std::vector<uint8_t> before = m.file_bytes();

  std::vector<uint8_t> first(4 * kSize, 0), second(4 * kSize, 0);
  std::memset(first.data(), 1, 1 << 20);
  std::memset(second.data(), 1, 1 << 20);
  std::memset(second.data(), 2, 512 << 10);
  std::memset(second.data() + (3 << 20), 3, 64 << 10);
  struct Case {
    const char* param;
    const std::vector<uint8_t>* want;
  };
  for (Case c : {Case{"first", &first}, Case{"1", &first}, Case{"2", &second},
                 Case{"snapshot.name=second", &second}, Case{"snapshot.id=1", &first},
                 Case{"snapshot.id=2,snapshot.name=second", &second}}) {
    SCOPED_TRACE(c.param);
    ASSERT_OK(m.open({.read_only = true}));
    auto sel = parse_snapshot_param(c.param);
    ASSERT_TRUE(sel.has_value());
    ASSERT_OK(loop->run(load_snapshot_tmp(*m.drv, *sel)));
    EXPECT_EQ(m.drv->size(), 4 * kSize);
    EXPECT_TRUE(read_all(*loop, *m.drv) == *c.want);
    // What the active image wrote after both snapshots is not there.
    auto bs = loop->run(m.drv->block_status(10 << 20, 64 << 10));
    ASSERT_TRUE(bs.has_value()) << bs.error().to_string();
    EXPECT_NE(bs->kind, BlockStatus::Kind::kData);
    m.close();
  }
  for (const char* missing :
       {"third", "snapshot.id=1,snapshot.name=second", "snapshot.name=", ""}) {
    ASSERT_OK(m.open({.read_only = true}));
    auto sel = parse_snapshot_param(missing);
    ASSERT_TRUE(sel.has_value());
    auto st = loop->run(load_snapshot_tmp(*m.drv, *sel));
    ASSERT_FALSE(st.has_value()) << missing;
    EXPECT_EQ(st.error().message(), "Can't find snapshot");
    m.close();
  }
  EXPECT_TRUE(m.file_bytes() == before) << "a snapshot view changed the file";
}

TEST(SnapshotView, AWritableImageIsRefused) {
  auto loop = make_loop();
  test::MemImage m(*loop, Qcow2CreateOptions{.size = kSize});
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "s"})).has_value());
  auto st = loop->run(load_snapshot_tmp(*m.drv, *parse_snapshot_param("s")));
  ASSERT_FALSE(st.has_value());
  EXPECT_NE(st.error().message().find("is writable but does not support snapshots"),
            std::string::npos)
      << st.error().message();
}

// A snapshot whose L1 table lies outside the file or is absurdly large: a clear error, and no
// allocation of the claimed size.
TEST(SnapshotView, AHostileSnapshotL1TableIsRefused) {
  auto loop = make_loop();
  test::MemImage m(*loop, Qcow2CreateOptions{.size = kSize});
  fill(*loop, *m.drv, 0, 1 << 20, 1);
  ASSERT_TRUE(loop->run(create_snapshot(*m.drv, {.name = "s"})).has_value());
  m.close();
  const uint64_t table = load_be64(m.file_bytes().data() + 64);
  struct Damage {
    uint64_t at;
    int width;
    uint64_t value;
    const char* says;
  };
  for (Damage d : {Damage{table, 8, 12345, "L1 table offset 0x3039"},
                   Damage{table, 8, uint64_t(1) << 50, "L1 table"},
                   Damage{table + 8, 4, 0x7fffffff, "exceeds the 32 MiB limit"}}) {
    std::vector<uint8_t> saved(m.file_bytes().begin() + d.at,
                               m.file_bytes().begin() + d.at + d.width);
    if (d.width == 8) {
      store_be64(m.file_bytes().data() + d.at, d.value);
    } else {
      store_be32(m.file_bytes().data() + d.at, static_cast<uint32_t>(d.value));
    }
    ASSERT_OK(m.open({.read_only = true}));
    auto st = loop->run(load_snapshot_tmp(*m.drv, *parse_snapshot_param("s")));
    ASSERT_FALSE(st.has_value()) << d.says;
    EXPECT_NE(st.error().message().find(d.says), std::string::npos) << st.error().message();
    m.close();
    std::memcpy(m.file_bytes().data() + d.at, saved.data(), saved.size());
  }
}

TEST(SnapshotView, RawImagesAreRefusedInQemusWords) {
  auto loop = make_loop();
  auto raw =
      loop->run(open_image_file(*loop, make_mem_file(), {.format = "raw", .read_only = true}));
  ASSERT_TRUE(raw.has_value());
  auto st = loop->run(load_snapshot_tmp(**raw, *parse_snapshot_param("s")));
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().message(),
            "Block format 'raw' used by device '' does not support temporarily loading internal "
            "snapshots");
}

}  // namespace
}  // namespace img
