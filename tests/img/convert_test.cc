// img convert: raw -> qcow2 -> raw round trips bit for bit, the qcow2 passes qemu-img check,
// sparse input stays sparse, and -p draws qemu-img's progress line.
#include <sys/stat.h>

#include "tool_test_util.h"

namespace imgtest {
namespace {

uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// 64 MiB raw file: 3 MiB of random data at 10 MiB, a 4 KiB pattern at 40 MiB, holes elsewhere,
// and one explicitly written zero MiB at 50 MiB.
std::string make_sparse_raw(const TempDir& d) {
  std::string f = d.file("src.raw");
  EXPECT_EQ(sh("truncate -s 64M " + f + " && head -c 3M /dev/urandom | dd of=" + f +
               " bs=1M seek=10 conv=notrunc status=none && printf 'hello world' | dd of=" + f +
               " bs=4096 seek=10240 conv=notrunc status=none && head -c 1M /dev/zero | dd of=" + f +
               " bs=1M seek=50 conv=notrunc status=none")
                .rc,
            0);
  return f;
}

TEST(ImgConvert, RawQcow2RawRoundTrip) {
  TempDir d;
  std::string src = make_sparse_raw(d);
  CmdResult a = img("convert -f raw -O qcow2 " + src + " " + d.file("mid.qcow2"));
  ASSERT_EQ(a.rc, 0) << a.err;
  CmdResult b = img("convert -O raw " + d.file("mid.qcow2") + " " + d.file("back.raw"));
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_EQ(sh("cmp " + src + " " + d.file("back.raw")).rc, 0);
  if (have_qemu_img()) {
    CmdResult c = sh("qemu-img check " + d.file("mid.qcow2"));
    EXPECT_EQ(c.rc, 0) << c.out << c.err;
    EXPECT_EQ(sh("qemu-img compare " + src + " " + d.file("mid.qcow2")).rc, 0);
  }
}

TEST(ImgConvert, SparseInputStaysSparse) {
  TempDir d;
  std::string src = make_sparse_raw(d);
  ASSERT_EQ(img("convert -O qcow2 " + src + " " + d.file("s.qcow2")).rc, 0);
  ASSERT_EQ(img("convert -O raw " + src + " " + d.file("s.raw")).rc, 0);
  // 3 MiB + one 64 KiB cluster of data, plus metadata; far below 64 MiB.
  EXPECT_LT(allocated_bytes(d.file("s.qcow2")), 4u << 20);
  EXPECT_LT(allocated_bytes(d.file("s.raw")), 4u << 20);
  EXPECT_EQ(std::filesystem::file_size(d.file("s.raw")), 64u << 20);
  if (have_qemu_img()) {
    CmdResult j = sh("qemu-img check --output=json " + d.file("s.qcow2"));
    auto m = flat_json(j.out);
    EXPECT_EQ(m["allocated-clusters"], "49");  // 48 for the 3 MiB, 1 for "hello world"
  }
}

TEST(ImgConvert, WithoutZeroDetectionEverythingIsWritten) {
  TempDir d;
  std::string src = make_sparse_raw(d);
  ASSERT_EQ(img("convert -S 0 -O raw " + src + " " + d.file("full.raw")).rc, 0);
  EXPECT_GE(allocated_bytes(d.file("full.raw")), 60u << 20);
  EXPECT_EQ(sh("cmp " + src + " " + d.file("full.raw")).rc, 0);
}

TEST(ImgConvert, QemuWrittenQcow2ReadsBackLikeQemuImgConvert) {
  REQUIRE_QEMU_IO();
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 q.qcow2 16M && qemu-io -c 'write -P 0xab 100k 300k' "
               "-c 'write -z 1M 1M' -c 'write -P 0x11 15M 1M' q.qcow2",
               d.path())
                .rc,
            0);
  ASSERT_EQ(img("convert -O raw q.qcow2 mine.raw", d.path()).rc, 0);
  ASSERT_EQ(sh("qemu-img convert -O raw q.qcow2 ref.raw", d.path()).rc, 0);
  EXPECT_EQ(sh("cmp mine.raw ref.raw", d.path()).rc, 0);
  ASSERT_EQ(
      img("convert -m 4 -O qcow2 -o cluster_size=4k,compat=0.10 q.qcow2 c.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare q.qcow2 c.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img check c.qcow2", d.path()).rc, 0);
}

TEST(ImgConvert, ProgressLine) {
  TempDir d;
  std::string src = make_sparse_raw(d);
  CmdResult r = img("convert -p -O raw " + src + " " + d.file("p.raw"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("    (0.00/100%)\r", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("    (100.00/100%)\r\n"), std::string::npos) << r.out;
  EXPECT_EQ(img("convert -q -p -O raw " + src + " " + d.file("q.raw")).out, "");
}

}  // namespace
}  // namespace imgtest
