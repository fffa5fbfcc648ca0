// img rebase beside qemu-img rebase on copies of the same overlay: safe mode keeps the guest-
// visible content (qemu-img compare against a flattened copy made before), copies up only what
// differs (the overlay's own ranges after it are qemu-img's), records the new backing file and
// its format; -b "" flattens; -u only rewrites the header (even when the old backing file is
// gone); a relative -b is relative to the overlay's folder; errors as qemu-img's.
#include "tool_test_util.h"

namespace imgtest {
namespace {

// a/ and b/ each hold old.qcow2 <- top.qcow2 and new.qcow2, which shares part of old's data.
void make_images(const TempDir& d) {
  std::string io = "qemu-io -f qcow2 ";
  ASSERT_EQ(
      sh("mkdir -p a && cd a && qemu-img create -q -f qcow2 old.qcow2 6M && " + io +
             "-c 'write -P 1 0 2M' -c 'write -P 2 3M 1000' -c 'write -P 8 5M 1M' "
             "old.qcow2 >/dev/null && "
             "qemu-img create -q -f qcow2 new.qcow2 4M && " +
             io +
             "-c 'write -P 1 0 1M' -c 'write -P 1 1M 512' -c 'write -P 5 1536k 4096' "
             "-c 'write -P 6 3584k 64k' new.qcow2 >/dev/null && "
             "qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 top.qcow2 && " +
             io + "-c 'write -P 3 100k 10k' -c 'write -z 1536k 64k' top.qcow2 >/dev/null && " +
             "qemu-img convert -O raw top.qcow2 ../flat.raw && cd .. && cp -r a b",
         d.path())
          .rc,
      0);
}

// Error text without the program's name (each line's prefix and the "--help" hint).
std::string without_prog(std::string s, const std::string& prog) {
  s = unprefixed(s, prog);
  const std::string hint = "'" + prog + " --help'";
  if (size_t i = s.find(hint); i != std::string::npos) s.replace(i, hint.size(), "'PROG --help'");
  return s;
}

std::string own_ranges(const TempDir& d, const std::string& f) {
  // Where the data lies in the file may differ; what the image holds may not.
  CmdResult m = sh("qemu-img map --output=json " + f +
                       " | grep '\"depth\": 0' | sed 's/, \"offset\": [0-9]*//' || true",
                   d.path());
  return m.out;
}

std::map<std::string, std::string> info(const TempDir& d, const std::string& f) {
  return flat_json(sh("qemu-img info --output=json " + f, d.path()).out);
}

void same_rebase(const TempDir& d, const std::string& args) {
  CmdResult q = sh("qemu-img rebase " + args + " top.qcow2", d.file("a"));
  CmdResult m = img("rebase " + args + " top.qcow2", d.file("b"));
  EXPECT_EQ(m.rc, q.rc) << m.err;
  if (args.find("-p") != std::string::npos) {
    const std::string end = "(100.00/100%)\r\n";  // the redraws before it depend on chunking
    EXPECT_NE(q.out.find(end), std::string::npos) << q.out;
    EXPECT_NE(m.out.find(end), std::string::npos) << m.out;
    EXPECT_EQ(m.out.substr(m.out.rfind(end)), q.out.substr(q.out.rfind(end)));
  } else {
    EXPECT_EQ(m.out, q.out);
  }
  EXPECT_EQ(without_prog(m.err, "img"), without_prog(q.err, "qemu-img"));
}

void expect_content_kept(const TempDir& d) {
  CmdResult c = sh("qemu-img compare flat.raw b/top.qcow2", d.path());
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  CmdResult k = sh("qemu-img check b/top.qcow2", d.path());
  EXPECT_EQ(k.rc, 0) << k.out;
}

TEST(ImgRebase, SafeModeKeepsTheContentAndCopiesWhatQemuImgCopies) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_images(d);
  same_rebase(d, "-b new.qcow2 -F qcow2");
  expect_content_kept(d);
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), own_ranges(d, "a/top.qcow2"));
  auto i = info(d, "b/top.qcow2");
  EXPECT_EQ(i["backing-filename"], "\"new.qcow2\"");
  EXPECT_EQ(i["backing-filename-format"], "\"qcow2\"");
  // Onto a raw backing file, with progress.
  ASSERT_EQ(sh("qemu-img convert -O raw a/old.qcow2 a/old.raw && cp a/old.raw b/", d.path()).rc, 0);
  same_rebase(d, "-p -b old.raw -F raw");
  expect_content_kept(d);
}

TEST(ImgRebase, EmptyBackingFlattens) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_images(d);
  same_rebase(d, "-b ''");
  expect_content_kept(d);
  EXPECT_EQ(info(d, "b/top.qcow2").count("backing-filename"), 0u);
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), own_ranges(d, "a/top.qcow2"));
}

TEST(ImgRebase, UnsafeOnlyRewritesTheHeader) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_images(d);
  ASSERT_EQ(sh("rm a/old.qcow2 b/old.qcow2", d.path()).rc, 0);  // the old chain is gone
  same_rebase(d, "-u -b new.qcow2 -F qcow2");
  // Nothing copied: what the image holds is what it held (qemu-img's map, through the new
  // backing file, alike for both).
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), own_ranges(d, "a/top.qcow2"));
  // Past the header cluster the file is byte for byte what qemu-img -u left.
  EXPECT_EQ(sh("cmp -i 65536 a/top.qcow2 b/top.qcow2", d.path()).rc, 0);
  auto i = info(d, "b/top.qcow2");
  EXPECT_EQ(i["backing-filename"], "\"new.qcow2\"");
  EXPECT_EQ(sh("qemu-img compare a/top.qcow2 b/top.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img check b/top.qcow2", d.path()).rc, 0);
  same_rebase(d, "-u -b ''");
  EXPECT_EQ(info(d, "b/top.qcow2").count("backing-filename"), 0u);
}

TEST(ImgRebase, ARelativeBackingIsRelativeToTheOverlaysFolder) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_images(d);
  ASSERT_EQ(sh("mkdir b/sub && mv b/top.qcow2 b/sub/ && "
               "qemu-img rebase -u -b ../old.qcow2 -F qcow2 b/sub/top.qcow2",
               d.path())
                .rc,
            0);
  // Run from elsewhere: "../new.qcow2" names b/new.qcow2, not one beside the working folder.
  CmdResult m = img("rebase -b ../new.qcow2 -F qcow2 b/sub/top.qcow2", d.path());
  ASSERT_EQ(m.rc, 0) << m.err;
  CmdResult c = sh("qemu-img compare flat.raw b/sub/top.qcow2", d.path());
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  EXPECT_EQ(info(d, "b/sub/top.qcow2")["backing-filename"], "\"../new.qcow2\"");
}

TEST(ImgRebase, ErrorsMatchQemuImgAndChangeNothing) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_images(d);
  for (std::string args : {"", "-b nothere -F qcow2", "-t bogus -b new.qcow2 -F qcow2",
                           "-T bogus -b new.qcow2 -F qcow2", "-u -b new.qcow2"}) {
    SCOPED_TRACE(args);
    same_rebase(d, args);
  }
  CmdResult q = sh("qemu-img rebase -b new.qcow2 -F qcow2 x.qcow2 y.qcow2", d.file("a"));
  CmdResult m = img("rebase -b new.qcow2 -F qcow2 x.qcow2 y.qcow2", d.file("b"));
  EXPECT_EQ(m.rc, q.rc);
  EXPECT_EQ(without_prog(m.err, "img"), without_prog(q.err, "qemu-img"));
  EXPECT_EQ(sh("cmp a/top.qcow2 b/top.qcow2", d.path()).rc, 0);
}

}  // namespace
}  // namespace imgtest
