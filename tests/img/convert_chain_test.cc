// img convert of an overlay: the output holds what the whole chain reads as, exactly as
// `qemu-img convert -O raw` of the same chain, including the ranges past the end of a backing
// file shorter than its overlay, and a qcow2 output stands alone (no backing file) and passes
// qemu-img check.
#include "tool_test_util.h"

namespace imgtest {
namespace {

// base.raw (1 MiB + 512) <- sub/mid.qcow2 (3 MiB, 4 KiB clusters, v2) <- top.qcow2 (5 MiB): data in
// every layer, zeros in the overlays, ranges past each backing file's end written and not.
void make_chain(const TempDir& d) {
  ASSERT_EQ(sh("mkdir sub && qemu-img create -q -f raw base.raw 1049088 && "
               "qemu-io -f raw -c 'write -P 0x11 0 1049088' base.raw && "
               "qemu-img create -q -f qcow2 -o cluster_size=4k,compat=0.10 -b ../base.raw -F raw "
               "sub/mid.qcow2 3M && "
               "qemu-io -c 'write -P 0x22 1000k 200k' -c 'write -z 100k 8k' "
               "-c 'write -P 0x23 2M 4k' sub/mid.qcow2 && "
               "qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 top.qcow2 5M && "
               "qemu-io -c 'write -P 0x33 64k 1000' -c 'write -z 1040k 64k' "
               "-c 'discard 2M 64k' -c 'write -P 0x34 4M 5000' top.qcow2",
               d.path())
                .rc,
            0);
}

TEST(ImgConvertChain, RawOutputEqualsQemuImgConvertOfTheChain) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chain(d);
  ASSERT_EQ(sh("qemu-img convert -O raw top.qcow2 ref.raw", d.path()).rc, 0);
  CmdResult r = img("convert -O raw top.qcow2 mine.raw", d.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(sh("cmp mine.raw ref.raw", d.path()).rc, 0);
  std::string ref = slurp(d.file("ref.raw"));
  ASSERT_EQ(ref.size(), 5u << 20);
  EXPECT_EQ(ref[10], 0x11);                // the raw base
  EXPECT_EQ(ref[1150 * 1024], 0x22);       // mid, past the base's end
  EXPECT_EQ(ref[3 * 1024 * 1024 + 7], 0);  // past mid's end
  EXPECT_EQ(ref[4 * 1024 * 1024 + 4999], 0x34);
  // From the middle of the chain, too (its relative backing name is relative to sub/).
  ASSERT_EQ(sh("qemu-img convert -O raw sub/mid.qcow2 ref_mid.raw", d.path()).rc, 0);
  ASSERT_EQ(img("convert -O raw sub/mid.qcow2 mine_mid.raw", d.path()).rc, 0);
  EXPECT_EQ(sh("cmp mine_mid.raw ref_mid.raw", d.path()).rc, 0);
}

TEST(ImgConvertChain, Qcow2OutputStandsAloneAndPassesQemuImgCheck) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chain(d);
  for (const char* opts : {"", "-o compat=0.10,cluster_size=512", "-c"}) {
    SCOPED_TRACE(opts);
    CmdResult r = img(std::string("convert -O qcow2 ") + opts + " top.qcow2 out.qcow2", d.path());
    ASSERT_EQ(r.rc, 0) << r.err;
    CmdResult c = sh("qemu-img check out.qcow2", d.path());
    EXPECT_EQ(c.rc, 0) << c.out << c.err;
    EXPECT_EQ(sh("qemu-img compare -f qcow2 -F qcow2 top.qcow2 out.qcow2", d.path()).rc, 0);
    CmdResult info = sh("qemu-img info --output=json out.qcow2", d.path());
    EXPECT_EQ(info.out.find("backing-filename"), std::string::npos) << info.out;
    ASSERT_EQ(sh("rm out.qcow2", d.path()).rc, 0);
  }
}

}  // namespace
}  // namespace imgtest
