// img bitmap against qemu-img bitmap 7.2: the same command sequence on two copies of an image
// leaves the same bitmaps (qemu-img info, human and JSON), the same errors and exit codes; a
// bitmap img added is one QEMU uses (qemu-io's writes set its bits, which img --clear frees
// again), and every image stays clean for qemu-img check, leaks included.
#include <regex>

#include "tool_test_util.h"

namespace imgtest {
namespace {

void expect_clean(const TempDir& d, const std::string& f) {
  CmdResult r = sh("qemu-img check " + f, d.path());
  EXPECT_EQ(r.rc, 0) << f << "\n" << r.out << r.err;
  EXPECT_NE(r.out.find("No errors were found"), std::string::npos) << r.out;
}

TEST(ImgBitmap, SameBitmapsAndErrorsAsQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir a, b;
  for (const TempDir* t : {&a, &b}) {
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 x.qcow2 10M && "
                 "qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M && "
                 "qemu-img create -q -f raw r.raw 1M",
                 t->path())
                  .rc,
              0);
  }
  const char* steps[] = {
      "--add x.qcow2 b0",
      "--add -g 4k --disable x.qcow2 b1",
      "--add x.qcow2 b0",  // exists
      "--add -g 1000 x.qcow2 b2",
      "--remove x.qcow2 nope",
      "--clear x.qcow2 nope",
      "--enable x.qcow2 b1",
      "--clear --disable x.qcow2 b0",
      "-g 64k x.qcow2 b0",
      "x.qcow2 b0",
      "--add x.qcow2",
      "--remove -b y.qcow2 x.qcow2 b0",
      "--add v2.qcow2 b0",
      "--add --remove x.qcow2 b3",
      "--remove x.qcow2 b1",
  };
  for (const char* s : steps) {
    std::string args = std::string("bitmap ") + s;
    CmdResult mine = img(args, a.path());
    CmdResult ref = sh("qemu-img " + args, b.path());
    EXPECT_EQ(mine.rc, ref.rc) << args << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
    // QEMU names the image by its internal node name ('#block199'), img by its file name.
    const std::string want = std::regex_replace(unprefixed(ref.err, "qemu-img"),
                                                std::regex("'#block[0-9]+'"), "'v2.qcow2'");
    EXPECT_EQ(unprefixed(mine.err, "img"), want) << args;
    // The bitmaps and everything else info shows; not the disk size (the tools place the new
    // clusters differently).
    for (const char* out : {"human", "json"}) {
      std::string info = std::string("qemu-img info --output=") + out +
                         " x.qcow2 | grep -v -e '^disk size:' -e '\"actual-size\":'";
      EXPECT_EQ(sh(info, a.path()).out, sh(info, b.path()).out) << args << " (" << out << ")";
    }
  }
  expect_clean(a, "x.qcow2");
  // A format without bitmaps: the same exit code, qemu's words up to its node name.
  CmdResult mine = img("bitmap --add -f raw r.raw b0", a.path());
  EXPECT_EQ(mine.rc, 1);
  EXPECT_NE(mine.err.find("Operation add on bitmap b0 failed: Can't store persistent bitmaps to"),
            std::string::npos)
      << mine.err;
}

TEST(ImgBitmap, QemuUsesWhatImgAddsAndImgClearsWhatQemuSet) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 x.qcow2 64M", d.path()).rc, 0);
  CmdResult add = img("bitmap --add -g 64k x.qcow2 b0", d.path());
  ASSERT_EQ(add.rc, 0) << add.err;
  // qemu-io writes with the bitmap enabled: QEMU stores its bits in data clusters at close.
  ASSERT_EQ(sh("qemu-io -c 'write 0 8M' -c 'write 40M 1M' x.qcow2", d.path()).rc, 0);
  expect_clean(d, "x.qcow2");
  // QEMU reads the bitmap back: merging it into a new one works (it is consistent).
  ASSERT_EQ(
      sh("qemu-img bitmap --add x.qcow2 copy && qemu-img bitmap --merge b0 x.qcow2 copy", d.path())
          .rc,
      0);
  CmdResult clear = img("bitmap --clear x.qcow2 b0", d.path());
  ASSERT_EQ(clear.rc, 0) << clear.err;
  CmdResult rm = img("bitmap --remove x.qcow2 copy", d.path());
  ASSERT_EQ(rm.rc, 0) << rm.err;
  expect_clean(d, "x.qcow2");
  CmdResult info = sh("qemu-img info x.qcow2", d.path());
  EXPECT_NE(info.out.find("name: b0"), std::string::npos) << info.out;
  EXPECT_EQ(info.out.find("name: copy"), std::string::npos) << info.out;
  EXPECT_EQ(info.out.find("in-use"), std::string::npos) << info.out;
  // qemu-io writes again into the cleared bitmap; then the image is as qemu left it before.
  ASSERT_EQ(sh("qemu-io -c 'write 0 8M' -c 'write 40M 1M' x.qcow2", d.path()).rc, 0);
  expect_clean(d, "x.qcow2");
}

}  // namespace
}  // namespace imgtest
