// img convert -c against qemu-img convert -c on the same source: the image passes qemu-img check,
// qemu-img compare finds it equal to the source, the same clusters are allocated (zero clusters
// left out) and compressed, the file is about as small as qemu-img's, and raw output is refused
// with qemu-img's message.
#include <filesystem>

#include "tool_test_util.h"

namespace imgtest {
namespace {

// 24 MiB: text lines, a stretch of random bytes (does not compress: stored as normal clusters),
// a hole, zeros written explicitly, and more text ending in a partial cluster.
std::string make_source(const TempDir& d) {
  std::string f = d.file("src.raw");
  EXPECT_EQ(sh("seq 1 2000000 | head -c 10M > " + f + " && head -c 1M /dev/urandom >> " + f +
               " && truncate -s 16M " + f + " && head -c 2M /dev/zero >> " + f +
               " && yes 'compressible text 0123456789' | head -c 6000000 >> " + f)
                .rc,
            0);
  return f;
}

class ImgConvertCompressed : public ::testing::TestWithParam<const char*> {};

TEST_P(ImgConvertCompressed, PassesQemuCheckAndCompareLikeQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = make_source(d);
  std::string opt = std::string("-o compression_type=") + GetParam() + " ";
  CmdResult a = img("convert -c -O qcow2 " + opt + src + " " + d.file("mine.qcow2"));
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(sh("qemu-img convert -c -O qcow2 " + opt + src + " " + d.file("ref.qcow2")).rc, 0);

  CmdResult c = sh("qemu-img check --output=json " + d.file("mine.qcow2"));
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  CmdResult rc = sh("qemu-img check --output=json " + d.file("ref.qcow2"));
  auto mine = flat_json(c.out), ref = flat_json(rc.out);
  EXPECT_EQ(mine["corruptions"], ref["corruptions"]);
  EXPECT_EQ(mine["leaks"], ref["leaks"]);
  EXPECT_EQ(mine["allocated-clusters"], ref["allocated-clusters"]) << c.out << rc.out;
  EXPECT_EQ(mine["compressed-clusters"], ref["compressed-clusters"]) << c.out << rc.out;
  EXPECT_NE(mine["compressed-clusters"], "");
  CmdResult cmp = sh("qemu-img compare " + src + " " + d.file("mine.qcow2"));
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  CmdResult info = sh("qemu-img info --output=json " + d.file("mine.qcow2"));
  EXPECT_EQ(flat_json(info.out)["format-specific.data.compression-type"],
            std::string("\"") + GetParam() + "\"")
      << info.out;
  // Same codec, same settings, same byte-granular packing: no larger than qemu-img's file (it
  // can be a little smaller: qemu-img restarts packing in a new host cluster more often).
  double ms = static_cast<double>(std::filesystem::file_size(d.file("mine.qcow2")));
  double rs = static_cast<double>(std::filesystem::file_size(d.file("ref.qcow2")));
  EXPECT_LE(ms, rs * 1.001) << ms << " vs " << rs;
  EXPECT_GE(ms, rs * 0.95) << ms << " vs " << rs;
  // qemu-img's compressed image back to raw through img (the source is not sector aligned, the
  // qcow2 size is rounded up: compare, not cmp).
  ASSERT_EQ(img("convert -O raw " + d.file("ref.qcow2") + " " + d.file("back.raw")).rc, 0);
  EXPECT_EQ(sh("qemu-img compare -f raw -F raw " + src + " " + d.file("back.raw")).rc, 0);
}

INSTANTIATE_TEST_SUITE_P(Codecs, ImgConvertCompressed, ::testing::Values("zlib", "zstd"));

TEST(ImgConvertCompressed, RawTargetIsRefusedAsQemuImgDoes) {
  TempDir d;
  std::string src = d.file("s.raw");
  ASSERT_EQ(sh("truncate -s 1M " + src).rc, 0);
  CmdResult a = img("convert -c -O raw " + src + " " + d.file("o.raw"));
  EXPECT_EQ(a.rc, 1);
  EXPECT_NE(a.err.find("Compression not supported for this file format"), std::string::npos)
      << a.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("o.raw")));
}

}  // namespace
}  // namespace imgtest
