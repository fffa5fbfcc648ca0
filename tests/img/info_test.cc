// img info: the same keys and values as qemu-img info, in JSON and in human form, on images
// qemu-img made.
#include "tool_test_util.h"

namespace imgtest {
namespace {

void expect_same_info(const TempDir& d, const std::string& file) {
  for (const char* out : {"json", "human"}) {
    std::string args = std::string("info --output=") + out + " " + file;
    CmdResult mine = img(args, d.path());
    CmdResult ref = sh("qemu-img " + args, d.path());
    ASSERT_EQ(ref.rc, 0) << ref.err;
    ASSERT_EQ(mine.rc, 0) << mine.err;
    if (std::string(out) == "json") {
      auto a = flat_json(mine.out), b = flat_json(ref.out);
      EXPECT_EQ(a, b) << file;
    }
    EXPECT_EQ(mine.out, ref.out) << file << " (" << out << ")";
  }
}

TEST(ImgInfo, MatchesQemuImgOnQemuImages) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  const char* creates[] = {
      "-f qcow2 a.qcow2 1G",
      "-f qcow2 -o compat=0.10,cluster_size=4k b.qcow2 1.5G",
      "-f qcow2 -o refcount_bits=8,compression_type=zstd,lazy_refcounts=on c.qcow2 10M",
      "-f qcow2 -o backing_file=a.qcow2,backing_fmt=qcow2 d.qcow2",
      "-f raw e.raw 1M",
  };
  for (const char* c : creates) {
    ASSERT_EQ(sh(std::string("qemu-img create -q ") + c, d.path()).rc, 0) << c;
  }
  for (const char* f : {"a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "e.raw"}) {
    expect_same_info(d, f);
  }
  // An absolute path makes qemu-img show the backing file's actual path.
  expect_same_info(d, d.file("d.qcow2"));
}

TEST(ImgInfo, MatchesQemuImgAfterWrites) {
  REQUIRE_QEMU_IO();
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 w.qcow2 64M", d.path()).rc, 0);
  ASSERT_EQ(sh("qemu-io -c 'write -P 0x5a 1M 3M' w.qcow2", d.path()).rc, 0);
  expect_same_info(d, "w.qcow2");
}

TEST(ImgInfo, ForcedFormat) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 1M", d.path()).rc, 0);
  CmdResult r = img("info -f raw --output=json a.qcow2", d.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(flat_json(r.out)["format"], "\"raw\"");
}

}  // namespace
}  // namespace imgtest

namespace imgtest {
namespace {

// Persistent dirty bitmaps in format-specific information, as qemu-img info lists them (human
// and JSON): an enabled one ("auto") and a disabled one of another granularity, made by
// qemu-img bitmap; then, once img has written the image (libimg marks every bitmap in-use
// before changing guest data, as it does not update them), the in-use flags.
TEST(ImgInfo, BitmapsAsQemuImgListsThem) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 b.qcow2 64M && qemu-img bitmap --add b.qcow2 bm0 && "
               "qemu-img bitmap --add -g 128k --disable b.qcow2 'second bitmap'",
               d.path())
                .rc,
            0);
  expect_same_info(d, "b.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f raw src.raw 64M", d.path()).rc, 0);
  CmdResult w = img("convert -n -O qcow2 src.raw b.qcow2", d.path());
  ASSERT_EQ(w.rc, 0) << w.err;
  expect_same_info(d, "b.qcow2");
  CmdResult i = img("info b.qcow2", d.path());
  EXPECT_NE(
      i.out.find("                [0]: in-use\n                [1]: auto\n            name: bm0"),
      std::string::npos)
      << i.out;
  EXPECT_EQ(sh("qemu-img check b.qcow2", d.path()).rc, 0);
}

}  // namespace
}  // namespace imgtest

namespace imgtest {
namespace {

// libimg marks persistent bitmaps in-use before the first change of guest data, not when it
// opens an image for writing: commands that change no guest data (snapshot create, amend,
// rebase -u, check -r) leave them as consistent as they were, as qemu-img does; the first
// write marks them.
TEST(ImgInfo, BitmapsStayConsistentUntilGuestDataChanges) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 b.qcow2 64M && qemu-img bitmap --add b.qcow2 bm0 && "
               "qemu-img create -q -f raw src.raw 64M",
               d.path())
                .rc,
            0);
  auto flags = [&] {
    auto m = flat_json(sh("qemu-img info --output=json b.qcow2", d.path()).out);
    return m["format-specific.data.bitmaps.0.flags.0"] +
           m["format-specific.data.bitmaps.0.flags.1"];
  };
  ASSERT_EQ(flags(), "\"auto\"");
  for (const char* cmd :
       {"snapshot -c s1 b.qcow2", "amend -o lazy_refcounts=on b.qcow2", "rebase -u -b '' b.qcow2",
        "check -r all b.qcow2", "snapshot -d s1 b.qcow2"}) {
    CmdResult r = img(cmd, d.path());
    EXPECT_EQ(r.rc, 0) << cmd << ": " << r.err;
    EXPECT_EQ(flags(), "\"auto\"") << "after img " << cmd;
    EXPECT_EQ(sh("qemu-img check b.qcow2", d.path()).rc, 0) << "after img " << cmd;
  }
  CmdResult w = img("convert -n -O qcow2 src.raw b.qcow2", d.path());
  ASSERT_EQ(w.rc, 0) << w.err;
  EXPECT_EQ(flags(), "\"in-use\"\"auto\"");
  EXPECT_EQ(sh("qemu-img check b.qcow2", d.path()).rc, 0);
}

}  // namespace
}  // namespace imgtest

namespace imgtest {
namespace {

// measure's "bitmaps size" for a source with persistent bitmaps (a bitmap's full size, its
// table and the directory, in the output's clusters), as qemu-img measure prints it, in both
// forms, for several cluster sizes; a v2 output prints none.
TEST(ImgMeasure, CountsTheSourcesBitmapsAsQemuImgDoes) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 b.qcow2 200M && qemu-img bitmap --add b.qcow2 bm0 && "
               "qemu-img bitmap --add -g 512 b.qcow2 fine-grained && "
               "qemu-img bitmap --add -g 16M --disable b.qcow2 coarse",
               d.path())
                .rc,
            0);
  for (const char* o : {"-O qcow2", "-O qcow2 -o cluster_size=4k", "-O qcow2 -o cluster_size=2M",
                        "-O qcow2 -o compat=0.10", "-O qcow2 --output=json", "-O raw"}) {
    CmdResult q = sh(std::string("qemu-img measure ") + o + " b.qcow2", d.path());
    CmdResult m = img(std::string("measure ") + o + " b.qcow2", d.path());
    ASSERT_EQ(q.rc, 0) << q.err;
    EXPECT_EQ(m.rc, 0) << m.err;
    EXPECT_EQ(m.out, q.out) << o;
  }
}

}  // namespace
}  // namespace imgtest
