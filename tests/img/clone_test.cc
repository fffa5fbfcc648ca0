// img clone (ours: qemu-img has none), checked with qemu-img: a linked clone is an overlay that
// reads exactly like SRC and records SRC (by a relative name beside it, an absolute one
// elsewhere) with its format; a full clone reads like SRC, stays sparse, keeps SRC's cluster size
// and compression type unless -o overrides them, keeps SRC's backing file unless --flatten; an
// existing DST is refused and left alone; a failed clone leaves no DST behind.
#include "tool_test_util.h"

namespace imgtest {
namespace {

std::map<std::string, std::string> info(const TempDir& d, const std::string& f) {
  return flat_json(sh("qemu-img info --output=json " + f, d.path()).out);
}

void expect_same(const TempDir& d, const std::string& a, const std::string& b) {
  CmdResult c = sh("qemu-img compare " + a + " " + b, d.path());
  EXPECT_EQ(c.rc, 0) << a << " vs " << b << ": " << c.out << c.err;
  if (b.ends_with(".raw")) return;  // qemu-img check has nothing to check in raw (exit 63)
  CmdResult k = sh("qemu-img check " + b, d.path());
  EXPECT_EQ(k.rc, 0) << k.out;
}

// src.qcow2: 64 MiB, 16 KiB clusters, zstd, with 1 MiB of data and a zero cluster.
void make_src(const TempDir& d) {
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o cluster_size=16k,compression_type=zstd "
               "src.qcow2 64M && qemu-io -f qcow2 -c 'write -P 0x11 1M 1M' -c 'write -z 9M 16k' "
               "src.qcow2 >/dev/null",
               d.path())
                .rc,
            0);
}

TEST(ImgClone, LinkedIsAnOverlayOnSrc) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_src(d);
  CmdResult m = img("clone --linked src.qcow2 vm1.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  auto i = info(d, "vm1.qcow2");
  EXPECT_EQ(i["backing-filename"], "\"src.qcow2\"");
  EXPECT_EQ(i["backing-filename-format"], "\"qcow2\"");
  EXPECT_EQ(i["virtual-size"], "67108864");
  expect_same(d, "src.qcow2", "vm1.qcow2");
  // From another folder the name is absolute, so it resolves from the clone's folder.
  ASSERT_EQ(sh("mkdir vms", d.path()).rc, 0);
  m = img("clone --linked -o cluster_size=4k src.qcow2 vms/vm2.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  i = info(d, "vms/vm2.qcow2");
  EXPECT_EQ(i["backing-filename"], "\"" + d.file("src.qcow2") + "\"");
  EXPECT_EQ(i["cluster-size"], "4096");
  expect_same(d, "src.qcow2", "vms/vm2.qcow2");
}

TEST(ImgClone, FullKeepsLayoutAndSparseness) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_src(d);
  CmdResult m = img("clone src.qcow2 copy.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  expect_same(d, "src.qcow2", "copy.qcow2");
  auto i = info(d, "copy.qcow2");
  EXPECT_EQ(i["cluster-size"], "16384");
  EXPECT_EQ(i["format-specific.data.compression-type"], "\"zstd\"");
  // Sparse: about the 1 MiB of data, not 64 MiB.
  EXPECT_LT(std::stoll(i["actual-size"]), 4 << 20);
  // -o wins over what SRC has; -O picks another format.
  m = img("clone --full -o cluster_size=64k -c src.qcow2 c2.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(info(d, "c2.qcow2")["cluster-size"], "65536");
  expect_same(d, "src.qcow2", "c2.qcow2");
  m = img("clone -q -O raw src.qcow2 c3.raw", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(m.out, "");
  EXPECT_EQ(info(d, "c3.raw")["format"], "\"raw\"");
  expect_same(d, "src.qcow2", "c3.raw");
}

TEST(ImgClone, FullOfAnOverlayKeepsItsBackingFileUnlessFlattened) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_src(d);
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 ov.qcow2 && "
               "qemu-io -f qcow2 -c 'write -P 0x22 1536k 8k' ov.qcow2 >/dev/null && mkdir out",
               d.path())
                .rc,
            0);
  CmdResult m = img("clone ov.qcow2 out/ov2.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(info(d, "out/ov2.qcow2")["backing-filename"], "\"" + d.file("src.qcow2") + "\"");
  expect_same(d, "ov.qcow2", "out/ov2.qcow2");
  // Only the overlay's own data was copied.
  EXPECT_LT(std::stoll(info(d, "out/ov2.qcow2")["actual-size"]), 1 << 20);
  m = img("clone --flatten ov.qcow2 flat.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(info(d, "flat.qcow2").count("backing-filename"), 0u);
  expect_same(d, "ov.qcow2", "flat.qcow2");
}

TEST(ImgClone, RefusesAnExistingDestinationAndLeavesNothingOnFailure) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_src(d);
  ASSERT_EQ(sh("echo keep > dst.qcow2", d.path()).rc, 0);
  CmdResult m = img("clone src.qcow2 dst.qcow2", d.path());
  EXPECT_EQ(m.rc, 1);
  EXPECT_NE(m.err.find("already exists"), std::string::npos) << m.err;
  EXPECT_EQ(slurp(d.file("dst.qcow2")), "keep\n");
  for (std::string args :
       {"-o cluster_size=3000 src.qcow2 n1.qcow2", "--linked -c src.qcow2 n2.qcow2",
        "nothere.qcow2 n3.qcow2", "--linked --full src.qcow2 n4.qcow2", "src.qcow2"}) {
    SCOPED_TRACE(args);
    m = img("clone " + args, d.path());
    EXPECT_EQ(m.rc, 1);
    EXPECT_EQ(std::count(m.err.begin(), m.err.end(), '\n'), 1) << m.err;
  }
  EXPECT_EQ(sh("ls n* 2>/dev/null", d.path()).out, "");
  // A source that fails midway (a compressed cluster that does not decompress: on a fresh
  // image with 64 KiB clusters it is the first after header, refcount table and block, L1 and
  // L2 table) leaves no partial clone, where qemu-img convert leaves its target behind.
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 bad.qcow2 1M && "
               "qemu-io -f qcow2 -c 'write -c -P 0x33 0 64k' bad.qcow2 >/dev/null && "
               "head -c 1000 /dev/urandom | dd of=bad.qcow2 bs=1 seek=327680 conv=notrunc "
               "2>/dev/null && ! qemu-img convert -O raw bad.qcow2 /dev/null 2>/dev/null",
               d.path())
                .rc,
            0);
  m = img("clone bad.qcow2 n5.qcow2", d.path());
  EXPECT_EQ(m.rc, 1) << m.out;
  EXPECT_FALSE(std::filesystem::exists(d.file("n5.qcow2")));
}

}  // namespace
}  // namespace imgtest
