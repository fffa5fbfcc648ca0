// img info on overlays and with --backing-chain: the same text, JSON and exit codes as
// qemu-img 7.2, loops and missing files included.
#include "tool_test_util.h"

namespace imgtest {
namespace {

void expect_same_info(const std::string& args, const std::string& dir) {
  CmdResult mine = img("info " + args, dir);
  CmdResult ref = sh("qemu-img info " + args, dir);
  EXPECT_EQ(mine.rc, ref.rc) << args << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
  EXPECT_EQ(mine.out, ref.out) << args;
  EXPECT_EQ(unprefixed(mine.err, "img"), unprefixed(ref.err, "qemu-img")) << args;
}

TEST(ImgInfoChain, MatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("mkdir -p vm && qemu-img create -q -f raw base.raw 1000 && "
               "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && "
               "qemu-img create -q -f qcow2 -o compat=0.10 -b ../mid.qcow2 -F qcow2 vm/top.qcow2 "
               "4M && qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 broken.qcow2 1M && "
               "qemu-img create -q -f qcow2 -u -b loop2.qcow2 -F qcow2 loop1.qcow2 1M && "
               "qemu-img create -q -f qcow2 -u -b loop1.qcow2 -F qcow2 loop2.qcow2 1M",
               d.path())
                .rc,
            0);
  for (const char* args :
       {"vm/top.qcow2", "--output=json vm/top.qcow2", "--backing-chain vm/top.qcow2",
        "--backing-chain --output=json vm/top.qcow2", "-U --backing-chain mid.qcow2", "base.raw",
        "broken.qcow2", "--backing-chain broken.qcow2", "--backing-chain loop1.qcow2",
        "--backing-chain --output=json base.raw"}) {
    expect_same_info(args, d.path());
  }
}

}  // namespace
}  // namespace imgtest
