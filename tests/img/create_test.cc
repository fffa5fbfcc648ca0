// img create: the "Formatting ..." line and the image it writes agree with qemu-img 7.2.
#include "tool_test_util.h"

namespace imgtest {
namespace {

// Runs "create ARGS" with both tools in separate folders and compares stdout and exit code.
void expect_same_create(const std::string& args) {
  TempDir a, b;
  CmdResult mine = img("create " + args, a.path());
  CmdResult ref = sh("qemu-img create " + args, b.path());
  EXPECT_EQ(mine.rc, ref.rc) << args << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
  EXPECT_EQ(mine.out, ref.out) << args;
}

TEST(ImgCreate, FormattingLineMatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  expect_same_create("-f qcow2 t.qcow2 1G");
  expect_same_create("-f qcow2 -o compat=0.10,cluster_size=4k t.qcow2 1.5G");
  expect_same_create("-f qcow2 -o compat=v3,lazy_refcounts=on,refcount_bits=8 t.qcow2 10M");
  expect_same_create("-f qcow2 -o compression_type=zstd,preallocation=metadata t.qcow2 3M");
  expect_same_create("-f qcow2 -o size=2M t.qcow2");
  expect_same_create("-f raw t.raw 1M");
  expect_same_create("t.raw 100k");
  expect_same_create("-f raw -o preallocation=falloc t.raw 1M");
  expect_same_create("-q -f qcow2 t.qcow2 1M");
}

// Regression (found comparing with qemu-img while fuzzing the size parser): "010k" was read as
// octal. The file sizes qemu-img 7.2 writes are the reference.
TEST(ImgCreate, LeadingZeroSizesMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  for (const char* size : {"010k", "08k", "0x10k", "00x10", "0100"}) {
    TempDir a, b;
    CmdResult mine = img(std::string("create -q -f raw t.raw ") + size, a.path());
    CmdResult ref = sh(std::string("qemu-img create -q -f raw t.raw ") + size, b.path());
    EXPECT_EQ(mine.rc, ref.rc) << size << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
    std::error_code e1, e2;
    EXPECT_EQ(std::filesystem::file_size(a.file("t.raw"), e1),
              std::filesystem::file_size(b.file("t.raw"), e2))
        << size;
  }
}

TEST(ImgCreate, QemuImgInfoAgrees) {
  REQUIRE_QEMU_IMG();
  struct Case {
    std::string opts;
    std::map<std::string, std::string> want;
  };
  const Case cases[] = {
      {"", {{"cluster-size", "65536"}, {"format-specific.data.compat", "\"1.1\""}}},
      {"-o compat=0.10", {{"format-specific.data.compat", "\"0.10\""}}},
      {"-o cluster_size=4096", {{"cluster-size", "4096"}}},
      {"-o refcount_bits=8", {{"format-specific.data.refcount-bits", "8"}}},
      {"-o lazy_refcounts=on", {{"format-specific.data.lazy-refcounts", "true"}}},
      {"-o compression_type=zstd", {{"format-specific.data.compression-type", "\"zstd\""}}},
      {"-o preallocation=metadata", {{"cluster-size", "65536"}}},
      {"-o cluster_size=2M,preallocation=full", {{"cluster-size", "2097152"}}},
  };
  for (const Case& c : cases) {
    TempDir d;
    std::string f = d.file("t.qcow2");
    CmdResult r = img("create -q -f qcow2 " + c.opts + " " + f + " 64M");
    ASSERT_EQ(r.rc, 0) << c.opts << ": " << r.err;
    CmdResult info = sh("qemu-img info --output=json " + f);
    ASSERT_EQ(info.rc, 0) << c.opts << ": " << info.err;
    auto m = flat_json(info.out);
    EXPECT_EQ(m["virtual-size"], "67108864") << c.opts;
    EXPECT_EQ(m["format"], "\"qcow2\"") << c.opts;
    for (auto& [k, v] : c.want) EXPECT_EQ(m[k], v) << c.opts << " key " << k;
    CmdResult check = sh("qemu-img check " + f);
    EXPECT_EQ(check.rc, 0) << c.opts << ": " << check.out << check.err;
  }
}

TEST(ImgCreate, BackingFileSizeComesFromTheBase) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(img("create -q -f qcow2 base.qcow2 32M", d.path()).rc, 0);
  CmdResult r = img("create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2", d.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  auto m = flat_json(sh("qemu-img info --output=json top.qcow2", d.path()).out);
  EXPECT_EQ(m["virtual-size"], "33554432");
  EXPECT_EQ(m["backing-filename"], "\"base.qcow2\"");
  EXPECT_EQ(m["backing-filename-format"], "\"qcow2\"");
}

TEST(ImgCreate, RawPreallocation) {
  TempDir d;
  ASSERT_EQ(img("create -q -f raw -o preallocation=full f.raw 1M", d.path()).rc, 0);
  EXPECT_EQ(std::filesystem::file_size(d.file("f.raw")), 1u << 20);
  ASSERT_EQ(img("create -q -f raw s.raw 1G", d.path()).rc, 0);
  EXPECT_EQ(std::filesystem::file_size(d.file("s.raw")), 1u << 30);
}

TEST(ImgCreate, OptionHelpListsQemuNames) {
  CmdResult r = img("create -f qcow2 -o help");
  EXPECT_EQ(r.rc, 0);
  for (const char* name :
       {"backing_file=", "backing_fmt=", "cluster_size=", "compat=", "compression_type=",
        "lazy_refcounts=", "preallocation=", "refcount_bits=", "size="}) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace imgtest
