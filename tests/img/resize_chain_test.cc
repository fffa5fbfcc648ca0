// img resize of an overlay beside qemu-img resize on copies of the same overlay (over the same
// backing file): same exit code, output and messages, and the same guest-visible bytes after
// each step; the backing file's data never shows in a grown part, version 2 overlays that would
// need zero clusters are refused in qemu-img's words, and img's results pass qemu-img check.
#include "tool_test_util.h"

namespace imgtest {
namespace {

std::string without_prog(const std::string& s, const std::string& prog) {
  return s.rfind(prog + ": ", 0) == 0 ? s.substr(prog.size() + 2) : s;
}

// base.qcow2: 4 MiB of 0x3c; ov.qcow2 (compat, size) over it with some data of its own.
void make_overlay(const TempDir& d, const std::string& compat, const std::string& size) {
  ASSERT_EQ(sh("rm -f base.qcow2 ov.qcow2 && qemu-img create -q -f qcow2 base.qcow2 4M && "
               "qemu-io -c 'write -P 0x3c 0 4M' base.qcow2 >/dev/null && "
               "qemu-img create -q -f qcow2 -o compat=" +
                   compat + " -b base.qcow2 -F qcow2 ov.qcow2 " + size +
                   " && qemu-io -c 'write -P 0x51 1000 70000' ov.qcow2 >/dev/null",
               d.path())
                .rc,
            0);
}

// Runs each "ARGS SIZE" step on q.qcow2 (qemu-img) and m.qcow2 (img), copies of ov.qcow2.
void same_steps_as_qemu(const TempDir& d, const std::vector<std::string>& steps) {
  ASSERT_EQ(sh("cp ov.qcow2 q.qcow2 && cp ov.qcow2 m.qcow2", d.path()).rc, 0);
  for (const std::string& step : steps) {
    SCOPED_TRACE("resize " + step);
    size_t sp = step.rfind(' ');
    std::string args = sp == std::string::npos ? "" : step.substr(0, sp);
    std::string size = sp == std::string::npos ? step : step.substr(sp + 1);
    CmdResult qr = sh("qemu-img resize " + args + " q.qcow2 " + size, d.path());
    CmdResult mr = img("resize " + args + " m.qcow2 " + size, d.path());
    EXPECT_EQ(mr.rc, qr.rc);
    EXPECT_EQ(mr.out, qr.out);
    EXPECT_EQ(without_prog(mr.err, "img"), without_prog(qr.err, "qemu-img"));
    ASSERT_EQ(sh("qemu-img convert -O raw q.qcow2 q.raw && qemu-img convert -O raw m.qcow2 m.raw",
                 d.path())
                  .rc,
              0);
    EXPECT_EQ(sh("cmp q.raw m.raw", d.path()).rc, 0) << "contents differ";
    CmdResult c = sh("qemu-img check m.qcow2", d.path());
    EXPECT_EQ(c.rc, 0) << c.out << c.err;
  }
}

TEST(ImgResizeChain, GrowingAnOverlayMatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_overlay(d, "1.1", "1049088");  // 1 MiB + 512: the old end inside a cluster
  same_steps_as_qemu(d, {"3M", "+512", "8M"});
  std::string raw = slurp(d.file("m.raw"));
  ASSERT_EQ(raw.size(), 8u << 20);
  EXPECT_EQ(raw[1049088 + 7], 0);  // not the backing file's 0x3c
  EXPECT_EQ(raw[2 << 20], 0);
  EXPECT_EQ(raw[500], 0x3c);  // below the old end it still shows
  for (const char* prealloc : {"metadata", "falloc", "full"}) {
    same_steps_as_qemu(d, {std::string("--preallocation=") + prealloc + " 3M"});
  }
}

TEST(ImgResizeChain, ShrinkThenGrowMatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_overlay(d, "1.1", "4M");
  same_steps_as_qemu(d, {"--shrink 1000k", "4M", "--shrink 64k", "+1M"});
}

TEST(ImgResizeChain, Version2OverlaysAreRefusedWhereZeroClustersWouldBeNeeded) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_overlay(d, "0.10", "1000k");
  // Past the cluster the old end lies in: refused; inside it: zero bytes do it.
  same_steps_as_qemu(d, {"3M", "1024k", "--shrink 512k", "5M"});
}

}  // namespace
}  // namespace imgtest
