// Bad input: each mistake exits 1 with a message naming the problem and the file.
#include "tool_test_util.h"

namespace imgtest {
namespace {

void expect_error(const std::string& args, const std::string& needle, const std::string& dir = "") {
  CmdResult r = img(args, dir);
  EXPECT_EQ(r.rc, 1) << args;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
}

TEST(ImgErrors, MissingFile) {
  TempDir d;
  expect_error("info nope.qcow2", "Could not open 'nope.qcow2': No such file or directory",
               d.path());
  expect_error("check nope.qcow2", "Could not open 'nope.qcow2': No such file or directory",
               d.path());
  expect_error("convert nope.raw out.raw", "Could not open 'nope.raw': No such file or directory",
               d.path());
}

TEST(ImgErrors, BadSize) {
  TempDir d;
  expect_error("create -f qcow2 x.qcow2 12Q", "Invalid image size specified", d.path());
  expect_error("create -f qcow2 x.qcow2 1.5", "Invalid image size specified", d.path());
  expect_error("create -f qcow2 x.qcow2 16E", "Must be between 0 and 9223372036854775807",
               d.path());
  expect_error("create -f qcow2 x.qcow2", "x.qcow2: Image creation needs a size parameter",
               d.path());
  EXPECT_FALSE(std::filesystem::exists(d.file("x.qcow2")));
}

TEST(ImgErrors, UnknownFormatAndOptions) {
  TempDir d;
  expect_error("create -f foo x.img 1M", "x.img: Unknown file format 'foo'", d.path());
  // As qemu-img, convert looks at -O after the sources opened.
  ASSERT_EQ(sh("truncate -s 1M a", d.path()).rc, 0);
  expect_error("convert -O foo a b", "Unknown file format 'foo'", d.path());
  EXPECT_FALSE(std::filesystem::exists(d.file("b")));
  expect_error("create -f qcow2 -o bogus=1 x.qcow2 1M", "x.qcow2: Invalid parameter 'bogus'",
               d.path());
  expect_error("create -f qcow2 -o cluster_size=3000 x.qcow2 1M",
               "Cluster size must be a power of two between 512 and 2048k", d.path());
  expect_error("create -f qcow2 -o compat=0.10,lazy_refcounts=on x.qcow2 1M",
               "Lazy refcounts only supported with compatibility level 1.1", d.path());
  expect_error("info --output=xml x", "--output must be used with human or json", d.path());
}

TEST(ImgErrors, BadFlagsAndCommands) {
  EXPECT_EQ(img("info --bogus x").rc, 1);
  EXPECT_EQ(img("create -Z x 1M").rc, 1);
  CmdResult r = img("frobnicate");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("Command not found: frobnicate"), std::string::npos);
  EXPECT_EQ(img("").rc, 1);
  EXPECT_EQ(img("--help").rc, 0);
  EXPECT_EQ(img("create --help").rc, 0);
}

TEST(ImgErrors, NotAQcow2Image) {
  TempDir d;
  ASSERT_EQ(img("create -q -f raw r.raw 1M", d.path()).rc, 0);
  CmdResult r = img("info -f qcow2 r.raw", d.path());
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("r.raw"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imgtest
