// img commit beside qemu-img commit on copies of the same chain (made with qemu-img and qemu-io):
// the same exit code, output and messages; the same guest-visible base afterwards (qemu-img
// compare), qemu-img check clean on every image; the top emptied like qemu-img empties it (no
// range of it allocated) unless -d or -b; and a 1 GiB overlay with little data committed in
// what its data costs.
#include <chrono>

#include "tool_test_util.h"

namespace imgtest {
namespace {

// Error text without the program's name (at the start of each line and in the "Try '... --help'"
// hint).
std::string without_prog(std::string s, const std::string& prog) {
  s = unprefixed(s, prog);
  const std::string hint = "'" + prog + " --help'";
  if (size_t i = s.find(hint); i != std::string::npos) s.replace(i, hint.size(), "'PROG --help'");
  return s;
}

// a/ and b/ each hold base.qcow2 <- mid.qcow2 <- top.qcow2: data, zero clusters over data,
// and writes that are not cluster aligned at every level.
void make_chains(const TempDir& d, const std::string& size = "8M") {
  std::string io = "qemu-io -f qcow2 ";
  ASSERT_EQ(sh("mkdir -p a && cd a && qemu-img create -q -f qcow2 base.qcow2 " + size + " && " +
                   io + "-c 'write -P 1 0 3M' -c 'write -P 9 7M 4096' base.qcow2 >/dev/null && " +
                   "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && " + io +
                   "-c 'write -P 2 1M 1M' -c 'write -z 5M 64k' mid.qcow2 >/dev/null && "
                   "qemu-img create -q -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F qcow2 "
                   "top.qcow2 && " +
                   io +
                   "-c 'write -P 3 1000 70000' -c 'write -z 2M 128k' -c 'write -z 0 4096' "
                   "-c 'write -P 4 6M 5000' top.qcow2 >/dev/null && cd .. && cp -r a b",
               d.path())
                .rc,
            0);
}

void expect_same_image(const TempDir& d, const std::string& a, const std::string& b) {
  CmdResult c = sh("qemu-img compare " + a + " " + b, d.path());
  EXPECT_EQ(c.rc, 0) << a << " vs " << b << ": " << c.out << c.err;
}

void expect_clean(const TempDir& d, const std::string& f) {
  CmdResult c = sh("qemu-img check " + f, d.path());
  EXPECT_EQ(c.rc, 0) << f << ": " << c.out << c.err;
}

// The ranges qemu-img map says the image itself (depth 0) holds.
std::string own_ranges(const TempDir& d, const std::string& f) {
  CmdResult m = sh("qemu-img map --output=json " + f + " | grep '\"depth\": 0' || true", d.path());
  return m.out;
}

// Runs commit ARGS on a/top.qcow2 with qemu-img and on b/top.qcow2 with img.
void same_commit(const TempDir& d, const std::string& args) {
  CmdResult q = sh("cd a && qemu-img commit " + args + " top.qcow2", d.path());
  CmdResult m = img("commit " + args + " top.qcow2", d.file("b"));
  EXPECT_EQ(m.rc, q.rc) << m.err;
  if (args.find("-p") != std::string::npos) {
    // How many redraws depends on the chunking; the bar's end does not.
    const std::string end = "(100.00/100%)\r\n";
    EXPECT_NE(q.out.find(end), std::string::npos) << q.out;
    EXPECT_NE(m.out.find(end), std::string::npos) << m.out;
    EXPECT_EQ(m.out.substr(m.out.rfind(end)), q.out.substr(q.out.rfind(end)));
  } else {
    EXPECT_EQ(m.out, q.out);
  }
  EXPECT_EQ(without_prog(m.err, "img"), without_prog(q.err, "qemu-img"));
}

TEST(ImgCommit, IntoTheBackingFileMatchesQemuImgAndEmptiesTheTop) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chains(d);
  ASSERT_EQ(sh("qemu-img convert -O raw a/top.qcow2 before.raw", d.path()).rc, 0);
  same_commit(d, "");
  for (const char* f : {"base.qcow2", "mid.qcow2", "top.qcow2"}) {
    expect_same_image(d, std::string("a/") + f, std::string("b/") + f);
    expect_clean(d, std::string("b/") + f);
  }
  // Emptied as qemu-img empties it: nothing of its own left, the guest sees the same bytes.
  EXPECT_EQ(own_ranges(d, "a/top.qcow2"), "");
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), "");
  expect_same_image(d, "before.raw", "b/top.qcow2");
  expect_same_image(d, "before.raw", "b/mid.qcow2");
}

TEST(ImgCommit, DashBCommitsThroughTheChainAndKeepsTheTop) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chains(d);
  ASSERT_EQ(sh("qemu-img convert -O raw a/top.qcow2 before.raw", d.path()).rc, 0);
  same_commit(d, "-b base.qcow2");
  expect_same_image(d, "a/base.qcow2", "b/base.qcow2");
  expect_same_image(d, "before.raw", "b/base.qcow2");  // top and mid are both in it now
  // -b implies -d: the top keeps its data (qemu-img's map of it is unchanged).
  EXPECT_NE(own_ranges(d, "b/top.qcow2"), "");
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), own_ranges(d, "a/top.qcow2"));
  expect_same_image(d, "before.raw", "b/top.qcow2");
  for (const char* f : {"base.qcow2", "mid.qcow2", "top.qcow2"}) {
    expect_clean(d, std::string("b/") + f);
  }
}

TEST(ImgCommit, DashDLeavesTheTopAsItWasAndDashPDrawsTheBar) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chains(d);
  std::string before = own_ranges(d, "b/top.qcow2");
  same_commit(d, "-d -p");
  expect_same_image(d, "a/mid.qcow2", "b/mid.qcow2");
  EXPECT_EQ(own_ranges(d, "b/top.qcow2"), before);
  same_commit(d, "-q");  // nothing printed, and a second commit changes nothing more
  expect_same_image(d, "a/mid.qcow2", "b/mid.qcow2");
}

TEST(ImgCommit, ABaseSmallerThanTheTopGrows) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("mkdir a && cd a && qemu-img create -q -f qcow2 base.qcow2 1M && "
               "qemu-io -f qcow2 -c 'write -P 5 0 1M' base.qcow2 >/dev/null && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 3M && "
               "qemu-io -f qcow2 -c 'write -P 6 2M 4096' top.qcow2 >/dev/null && cd .. && "
               "cp -r a b",
               d.path())
                .rc,
            0);
  same_commit(d, "");
  expect_same_image(d, "a/base.qcow2", "b/base.qcow2");
  CmdResult info = sh("qemu-img info --output=json b/base.qcow2", d.path());
  EXPECT_EQ(flat_json(info.out)["virtual-size"], "3145728");
}

TEST(ImgCommit, ErrorsMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  make_chains(d);
  ASSERT_EQ(sh("cp a/base.qcow2 a/alone.qcow2 && cp a/base.qcow2 b/alone.qcow2", d.path()).rc, 0);
  for (std::string args :
       {"alone.qcow2", "-b nothere top.qcow2", "-b top.qcow2 top.qcow2", "-t bogus top.qcow2",
        "-r x top.qcow2", "", "top.qcow2 mid.qcow2", "-f raw top.qcow2"}) {
    SCOPED_TRACE(args);
    CmdResult q = sh("qemu-img commit " + args, d.file("a"));
    CmdResult m = img("commit " + args, d.file("b"));
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_EQ(without_prog(m.err, "img"), without_prog(q.err, "qemu-img"));
  }
  // Nothing was changed by any of them.
  for (const char* f : {"base.qcow2", "mid.qcow2", "top.qcow2"}) {
    EXPECT_EQ(sh(std::string("cmp a/") + f + " b/" + f, d.path()).rc, 0) << f;
  }
}

TEST(ImgCommit, ABigSparseOverlayCostsWhatItsDataCosts) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 base.qcow2 1T && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
               "qemu-io -f qcow2 -c 'write -P 7 100G 1M' -c 'write -z 900G 1G' top.qcow2 "
               ">/dev/null && qemu-img convert -O qcow2 top.qcow2 before.qcow2",
               d.path())
                .rc,
            0);
  auto t0 = std::chrono::steady_clock::now();
  CmdResult m = img("commit top.qcow2", d.path());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(m.rc, 0) << m.err;
  // qemu-img takes ~0.1 s here; a walk of 1 TiB in 2 MiB steps would take minutes.
  EXPECT_LT(secs, 10.0);
  expect_same_image(d, "before.qcow2", "base.qcow2");
  expect_clean(d, "base.qcow2");
  CmdResult du = sh("du -k base.qcow2 | cut -f1", d.path());
  EXPECT_LT(std::stoll(du.out), 64 * 1024) << "the base grew by more than its new data";
}

}  // namespace
}  // namespace imgtest
