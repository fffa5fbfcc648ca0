// img and qemu-img side by side on an image a running QEMU (qemu-io) holds: the same refusals,
// in the same words and exit codes, and -U/--force-share reading it anyway (docs/img.md,
// "Locking").
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../libimg/lock_probe.h"
#include "tool_test_util.h"

namespace imgtest {
namespace {

class ImgLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_QEMU_IMG();
    REQUIRE_QEMU_IO();
    disk_ = dir_.file("disk.qcow2");
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 '" + disk_ + "' 1M").rc, 0);
  }
  // Runs `TOOL args` with both tools; expects the same exit code and, program names aside,
  // the same stderr.
  void expect_same(const std::string& args, int want_rc) {
    SCOPED_TRACE(args);
    CmdResult q = sh("qemu-img " + args);
    CmdResult m = img(args);
    EXPECT_EQ(q.rc, want_rc) << q.err;
    EXPECT_EQ(m.rc, q.rc) << m.err;
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
  }
  TempDir dir_;
  std::string disk_;
};

TEST_F(ImgLockTest, RefusedLikeQemuImgWhileQemuWritesTheImage) {
  img::test::QemuIoHolder vm(disk_, {"-f", "qcow2"});
  ASSERT_TRUE(vm.ready());
  std::string d = "'" + disk_ + "'";
  // Readers: 'Failed to get shared "write" lock'; writers: 'Failed to get "write" lock'.
  for (const std::string& args :
       {"info " + d, "check " + d, "map " + d, "snapshot -l " + d,
        "convert -O raw " + d + " '" + dir_.file("out.raw") + "'", "resize " + d + " 2M",
        "snapshot -c s1 " + d, "amend -o lazy_refcounts=on " + d, "create -f qcow2 " + d + " 1M",
        "snapshot -U -c s1 " + d, "bench -c 10 " + d, "bench -w -c 10 " + d}) {
    expect_same(args, 1);
  }
  expect_same("compare " + d + " " + d, 2);  // compare's "could not open" exit code
  // And the image is as it was: the refused create did not truncate it.
  CmdResult size =
      sh("qemu-img info -U --output=json " + d + " | grep -c '\"virtual-size\": 1048576'");
  EXPECT_EQ(size.out, "1\n");
}

TEST_F(ImgLockTest, ForceShareReadsWhileQemuWritesTheImage) {
  img::test::QemuIoHolder vm(disk_, {"-f", "qcow2"});
  ASSERT_TRUE(vm.ready());
  std::string d = "'" + disk_ + "'";
  for (const std::string& args :
       {"info -U " + d, "info --force-share --output=json " + d, "check -U " + d, "map -U " + d,
        "compare -U " + d + " " + d, "snapshot -U -l " + d, "measure -U -O qcow2 " + d}) {
    SCOPED_TRACE(args);
    CmdResult q = sh("qemu-img " + args);
    CmdResult m = img(args);
    EXPECT_EQ(q.rc, 0) << q.err;
    EXPECT_EQ(m.rc, 0) << m.err;
    EXPECT_EQ(m.out, q.out);
  }
  CmdResult m = img("convert -U -O raw " + d + " '" + dir_.file("copy.raw") + "'");
  EXPECT_EQ(m.rc, 0) << m.err;
  // bench reads beside the writer with -U (its report differs only in the time).
  m = img("bench -U -c 10 " + d);
  EXPECT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(sh("qemu-img bench -U -c 10 " + d).rc, 0);
}

TEST_F(ImgLockTest, ReadersShareWithAReadOnlyQemu) {
  img::test::QemuIoHolder vm(disk_, {"-f", "qcow2", "-r"});
  ASSERT_TRUE(vm.ready());
  std::string d = "'" + disk_ + "'";
  expect_same("info " + d + " >/dev/null", 0);
  expect_same("resize " + d + " 2M", 1);
}

}  // namespace
}  // namespace imgtest
