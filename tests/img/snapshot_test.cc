// img snapshot beside qemu-img snapshot (7.2): the same "Snapshot list:" table and the same
// info output for the same image, the same exit codes and messages; snapshots either tool made
// apply and delete in the other, qemu-img check is clean after every operation, and the data
// read back through qemu-io after an apply is what the snapshot held.
#include "tool_test_util.h"

namespace imgtest {
namespace {

void qemu_check_clean(const std::string& f) {
  CmdResult r = sh("qemu-img check " + f);
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
}

void qemu_io_ok(const std::string& f, const std::string& cmds) {
  CmdResult r = sh("qemu-io " + cmds + " " + f);
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("verification failed"), std::string::npos) << cmds << "\n" << r.out;
}

TEST(ImgSnapshot, ListAndInfoPrintWhatQemuImgPrints) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string f = d.file("a.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 64M").rc, 0);
  ASSERT_EQ(sh("qemu-img snapshot -c first " + f).rc, 0);
  ASSERT_EQ(img("snapshot -c second-with-a-long-name " + f).rc, 0);
  ASSERT_EQ(sh("qemu-img snapshot -c '' " + f).rc, 0);
  CmdResult q = sh("qemu-img snapshot -l " + f), m = img("snapshot -l " + f);
  EXPECT_EQ(m.rc, q.rc);
  EXPECT_EQ(m.out, q.out);
  EXPECT_NE(m.out.find("2         second-with-a-long-name"), std::string::npos) << m.out;
  CmdResult qi = sh("qemu-img info " + f), mi = img("info " + f);
  EXPECT_EQ(mi.out, qi.out);
  CmdResult qj = sh("qemu-img info --output=json " + f), mj = img("info --output=json " + f);
  EXPECT_EQ(mj.out, qj.out);
  // 7.2's snapshot command has no --output (nor -f): both refuse it.
  EXPECT_EQ(img("snapshot -l --output=json " + f).rc, 1);
  EXPECT_EQ(sh("qemu-img snapshot -l --output=json " + f).rc, 1);
  // No snapshots: nothing at all.
  std::string e = d.file("e.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + e + " 1M").rc, 0);
  CmdResult el = img("snapshot -l " + e);
  EXPECT_EQ(el.rc, 0);
  EXPECT_EQ(el.out, "");
}

TEST(ImgSnapshot, SnapshotsMadeByEitherToolApplyAndDeleteInTheOther) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string f = d.file("a.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 256M").rc, 0);
  qemu_io_ok(f, "-c 'write -P 0x11 0 3M' -c 'write -P 0x12 200M 1M'");
  ASSERT_EQ(img("snapshot -c ours " + f).rc, 0);
  qemu_check_clean(f);
  qemu_io_ok(f, "-c 'write -P 0x21 1M 3M' -c 'write -z 200M 64k'");
  ASSERT_EQ(sh("qemu-img snapshot -c theirs " + f).rc, 0);
  qemu_io_ok(f, "-c 'write -P 0x31 0 8M'");
  qemu_check_clean(f);

  // qemu-img applies ours, img applies theirs; qemu-io reads back what each snapshot held.
  ASSERT_EQ(sh("qemu-img snapshot -a ours " + f).rc, 0);
  qemu_io_ok(f, "-c 'read -P 0x11 0 3M' -c 'read -P 0 3M 5M' -c 'read -P 0x12 200M 1M'");
  ASSERT_EQ(img("snapshot -a theirs " + f).rc, 0);
  qemu_check_clean(f);
  qemu_io_ok(f,
             "-c 'read -P 0x11 0 1M' -c 'read -P 0x21 1M 3M' -c 'read -P 0 200M 64k' "
             "-c 'read -P 0x12 204864k 960k'");
  // And by id, as qemu-img takes it.
  ASSERT_EQ(img("snapshot -a 1 " + f).rc, 0);
  qemu_io_ok(f, "-c 'read -P 0x11 0 3M'");
  qemu_check_clean(f);
  // Writes after an apply leave the snapshot alone.
  qemu_io_ok(f, "-c 'write -P 0x41 0 2M'");
  ASSERT_EQ(img("snapshot -a ours " + f).rc, 0);
  qemu_io_ok(f, "-c 'read -P 0x11 0 3M'");

  ASSERT_EQ(img("snapshot -d theirs " + f).rc, 0);
  qemu_check_clean(f);
  ASSERT_EQ(sh("qemu-img snapshot -d ours " + f).rc, 0);
  qemu_check_clean(f);
  qemu_io_ok(f, "-c 'read -P 0x11 0 3M'");
  EXPECT_EQ(img("snapshot -l " + f).out, "");
  // Our check agrees with qemu-img's on the result.
  EXPECT_EQ(img("check " + f).rc, 0);
}

TEST(ImgSnapshot, ApplyRestoresADifferentDiskSize) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string f = d.file("a.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 64M").rc, 0);
  qemu_io_ok(f, "-c 'write -P 0x51 60M 4M'");
  ASSERT_EQ(img("snapshot -c small " + f).rc, 0);
  ASSERT_EQ(sh("qemu-img resize -q " + f + " 1G").rc, 0);
  qemu_io_ok(f, "-c 'write -P 0x52 900M 1M'");
  ASSERT_EQ(img("snapshot -a small " + f).rc, 0);
  qemu_check_clean(f);
  EXPECT_NE(sh("qemu-img info " + f).out.find("virtual size: 64 MiB"), std::string::npos);
  qemu_io_ok(f, "-c 'read -P 0x51 60M 4M'");
  ASSERT_EQ(img("snapshot -d small " + f).rc, 0);
  qemu_check_clean(f);
}

TEST(ImgSnapshot, ErrorsAndExitCodesAreQemuImgs) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string f = d.file("a.qcow2"), r = d.file("r.raw");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 1M && qemu-img snapshot -c s " + f).rc, 0);
  ASSERT_EQ(sh("qemu-img create -q -f raw " + r + " 1M").rc, 0);
  for (std::string args : {"-a nope " + f, "-d nope " + f, "-d 1 " + f, "-l -c x " + f, "-c x " + r,
                           "-l " + r, "-l " + d.file("missing.qcow2"), f}) {
    SCOPED_TRACE(args);
    CmdResult q = sh("qemu-img snapshot " + args), m = img("snapshot " + args);
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_EQ(m.out, q.out);
    std::string qe = unprefixed(q.err, "qemu-img");
    // qemu-img's warning for a probed raw image (img does not restrict block 0).
    if (size_t w = qe.find("WARNING: Image format"); w != std::string::npos) {
      const std::string end = "explicitly to remove the restrictions.\n";
      qe.erase(w, qe.find(end) + end.size() - w);
    }
    std::string me = unprefixed(m.err, "img");
    if (size_t t = qe.find("Try 'qemu-img --help'"); t != std::string::npos) {
      qe.replace(t, 21, "Try 'img --help'");
    }
    EXPECT_EQ(me, qe);
  }
  qemu_check_clean(f);
}

}  // namespace
}  // namespace imgtest

namespace imgtest {
namespace {

// convert -l beside qemu-img convert -l on an image qemu-img made: a snapshot taken before the
// image grew past one L1 entry's reach reads at the current size, zeros past its own table; every
// form of -l's text selects what qemu-img selects, and the failures say what qemu-img says with its
// exit code, leaving no target.
TEST(ImgSnapshot, ConvertDashLReadsTheSnapshotAsQemuImgDoes) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string f = d.file("s.qcow2");
  // 4 KiB clusters: one L2 table maps 2 MiB, so the 2 MiB image's snapshot has one L1 entry
  // and the 8 MiB image four.
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o cluster_size=4k " + f +
               " 2M && qemu-io -c 'write -P 1 0 1M' " + f + " && qemu-img snapshot -c first " + f +
               " && qemu-io -c 'write -P 2 0 512k' " + f + " && qemu-img resize -q " + f +
               " 8M && qemu-io -c 'write -P 3 6M 64k' " + f + " && qemu-img snapshot -c second " +
               f + " && qemu-io -c 'write -P 4 0 64k' " + f)
                .rc,
            0);
  for (std::string l :
       {"first", "1", "2", "second", "snapshot.id=1", "snapshot.name=second",
        "snapshot.id=2,snapshot.name=second", "snapshot.id=1,snapshot.name=second",
        "snapshot.name=", "", "nope", "snapshot.foo=1", "snapshot.name=first,x=1"}) {
    SCOPED_TRACE("-l '" + l + "'");
    CmdResult q = sh("qemu-img convert -l '" + l + "' -O raw " + f + " " + d.file("q.raw"));
    CmdResult m = img("convert -l '" + l + "' -O raw " + f + " " + d.file("m.raw"));
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
    if (q.rc == 0) {
      EXPECT_EQ(sh("cmp " + d.file("q.raw") + " " + d.file("m.raw")).rc, 0);
    } else {
      EXPECT_FALSE(std::filesystem::exists(d.file("m.raw")));
    }
    std::filesystem::remove(d.file("q.raw"));
    std::filesystem::remove(d.file("m.raw"));
  }
  // Several sources, and a raw source.
  CmdResult m = img("convert -l first -O raw " + f + " " + f + " " + d.file("m.raw"));
  EXPECT_EQ(m.rc, 1);
  EXPECT_EQ(m.err, "img: No support for concatenating multiple snapshot\n");
  ASSERT_EQ(sh("qemu-img create -q -f raw " + d.file("r.raw") + " 1M").rc, 0);
  CmdResult q = sh("qemu-img convert -l x -O raw " + d.file("r.raw") + " " + d.file("q.raw"));
  m = img("convert -l x -O raw " + d.file("r.raw") + " " + d.file("m.raw"));
  EXPECT_EQ(m.rc, q.rc);
  EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
  qemu_check_clean(f);
}

}  // namespace
}  // namespace imgtest
