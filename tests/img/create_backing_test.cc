// img create -b: overlays on a backing file, with qemu-img 7.2's checks, messages, exit codes and
// defaults (size from the backing image, a backing format required, -u not to open it).
#include "tool_test_util.h"

namespace imgtest {
namespace {

// Runs "create ARGS" with both tools, each in a folder holding the same backing files, and
// compares exit code, stdout and stderr (after the program name), then the images themselves.
void expect_same(const std::string& setup, const std::string& args) {
  TempDir a, b;
  ASSERT_EQ(sh(setup, a.path()).rc, 0) << setup;
  ASSERT_EQ(sh(setup, b.path()).rc, 0) << setup;
  CmdResult mine = img("create " + args, a.path());
  CmdResult ref = sh("qemu-img create " + args, b.path());
  EXPECT_EQ(mine.rc, ref.rc) << args << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
  EXPECT_EQ(mine.out, ref.out) << args;
  EXPECT_EQ(unprefixed(mine.err, "img"), unprefixed(ref.err, "qemu-img")) << args;
  if (ref.rc == 0) {
    // The overlay (last word of args) as qemu-img sees it, from either tool.
    std::string file = args.substr(args.rfind(' ') + 1);
    if (file.find_first_not_of("0123456789kMG") == std::string::npos) {
      std::string rest = args.substr(0, args.rfind(' '));
      file = rest.substr(rest.rfind(' ') + 1);
    }
    CmdResult ia = sh("qemu-img info --output=json -U " + file, a.path());
    CmdResult ib = sh("qemu-img info --output=json -U " + file, b.path());
    ASSERT_EQ(ia.rc, 0) << ia.err;
    auto ma = flat_json(ia.out), mb = flat_json(ib.out);
    for (const char* k : {"virtual-size", "backing-filename", "full-backing-filename",
                          "backing-filename-format", "cluster-size"}) {
      EXPECT_EQ(ma[k], mb[k]) << args << " key " << k;
    }
    if (args.find("-u ") == std::string::npos) {  // -u: the backing file may not exist
      EXPECT_EQ(sh("qemu-img check -U " + file, a.path()).rc, 0) << args;
    }
  }
}

const char* kSetup =
    "mkdir -p sub && qemu-img create -q -f qcow2 base.qcow2 3M && "
    "qemu-img create -q -f raw base.raw 1000000 && qemu-img create -q -f qcow2 sub/b2.qcow2 2M";

TEST(ImgCreateBacking, MatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  expect_same(kSetup, "-f qcow2 -b base.qcow2 -F qcow2 ov.qcow2");  // size from the backing
  expect_same(kSetup, "-f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 5M");
  expect_same(kSetup, "-f qcow2 -b base.raw -F raw ov.qcow2");  // raw: whole sectors
  expect_same(kSetup, "-f qcow2 -b base.qcow2 -F raw ov.qcow2");
  expect_same(kSetup, "-f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 ov.qcow2");
  expect_same(kSetup, "-f qcow2 -b ../base.qcow2 -F qcow2 sub/ov.qcow2");  // relative to sub/
  expect_same(kSetup, "-f qcow2 -b b2.qcow2 -F qcow2 sub/ov.qcow2");
  expect_same(kSetup, "-f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 ov.qcow2");
  expect_same(kSetup, "-f qcow2 -u -b nowhere.qcow2 -F qcow2 ov.qcow2 1M");
}

TEST(ImgCreateBacking, ErrorsMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  expect_same(kSetup, "-f qcow2 -b base.qcow2 ov.qcow2");  // no -F: refused, format named
  expect_same(kSetup, "-f qcow2 -b base.qcow2 ov.qcow2 1M");
  expect_same(kSetup, "-f qcow2 -u -b base.qcow2 ov.qcow2 1M");
  expect_same(kSetup, "-f qcow2 -b nowhere.qcow2 -F qcow2 ov.qcow2 1M");
  expect_same(kSetup, "-f qcow2 -b base.qcow2 -F qcow2 sub/ov.qcow2");    // sub/base.qcow2
  expect_same(kSetup, "-f qcow2 -b base.raw -F qcow2 ov.qcow2");          // wrong format
  expect_same(kSetup, "-f qcow2 -u -b nowhere.qcow2 -F qcow2 ov.qcow2");  // -u needs a size
  expect_same(kSetup, "-f qcow2 -b ov.qcow2 -F qcow2 ov.qcow2 1M");       // itself
  expect_same(kSetup, "-f raw -b base.qcow2 -F qcow2 ov.raw");
}

// The overlay reads through to the backing image: img convert of it equals qemu-img's.
TEST(ImgCreateBacking, OverlayReadsBackingData) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 base.qcow2 2M && "
               "qemu-io -c 'write -P 0x61 0 1M' -c 'write -P 0x62 1536k 100k' base.qcow2",
               d.path())
                .rc,
            0);
  CmdResult c = img("create -q -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2", d.path());
  ASSERT_EQ(c.rc, 0) << c.err;
  ASSERT_EQ(sh("qemu-io -c 'write -P 0x63 512k 4k' ov.qcow2", d.path()).rc, 0);
  ASSERT_EQ(img("convert -O raw ov.qcow2 mine.raw", d.path()).rc, 0);
  ASSERT_EQ(sh("qemu-img convert -O raw ov.qcow2 ref.raw", d.path()).rc, 0);
  EXPECT_EQ(slurp(d.file("mine.raw")), slurp(d.file("ref.raw")));
  EXPECT_EQ(slurp(d.file("mine.raw")).size(), 2u << 20);
}

}  // namespace
}  // namespace imgtest
