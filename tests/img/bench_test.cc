// img bench side by side with qemu-img 7.2's bench: the report's first lines, the errors and exit
// codes, and what -w leaves in the image (the same bytes at the same offsets, wrap included).
#include <regex>
#include <string>
#include <vector>

#include "tool_test_util.h"

namespace {

using imgtest::kImg;
using imgtest::sh;
using imgtest::unprefixed;

// "Run completed in 0.123 seconds." with the time taken out, which differs run to run.
std::string without_time(const std::string& s) {
  return std::regex_replace(s, std::regex("in [0-9]+\\.[0-9]{3} seconds"), "in T seconds");
}

class BenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sh("qemu-img --version").rc != 0) GTEST_SKIP() << "qemu-img is not installed";
    image_ = dir_.file("b.qcow2");
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + image_ + " 8M").rc, 0);
  }
  imgtest::TempDir dir_;
  std::string image_;
};

TEST_F(BenchTest, ReportsErrorsAndExitCodesAsQemuImg) {
  const std::vector<std::string> cases = {
      "-c 300",
      "-c 0",
      "-w -c 200 -d 4 -s 64k -S 128k -o 1M --pattern=5 --flush-interval=100",
      "-w --no-drain --flush-interval=64 -c 300",
      "-s 0 -c 10",
      "-c 3 -s 1M -o 7M",
      "-t none -n -c 10",
      "-i threads -c 10",
      "-i io_uring -c 10",
      "-t unsafe -w -c 10",
      // Errors.
      "-o 8M -c 3",                     // past the end: EIO
      "-w -c 300 -s 64k -S 96k -o 1M",  // the 245th request straddles the end: EIO
      "-s 9M -c 1",                     // bigger than the image
      "--flush-interval=10",
      "-w --flush-interval=10 -d 64",
      "-t bogus",
      "-i bogus",
      "--pattern=300 -w",
      "-c -5",
      "-c abc",
      "-c 3000000000",
      "-d -1",
      "-s -1",
      "-s 3G",
      "-S abc",
      "-o abc",
      "--flush-interval=abc",
      "-n -c 10",
      "-w -U -c 10",
      "-f bogus",
  };
  for (const std::string& c : cases) {
    auto q = sh("qemu-img bench " + c + " " + image_);
    auto m = sh(kImg + " bench " + c + " " + image_);
    EXPECT_EQ(m.rc, q.rc) << c << "\nimg: " << m.err << "qemu-img: " << q.err;
    EXPECT_EQ(without_time(m.out), without_time(q.out)) << c;
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img")) << c;
  }
  // No file, two files.
  for (const std::string& c : {std::string(""), image_ + " " + image_}) {
    auto q = sh("qemu-img bench " + c);
    auto m = sh(kImg + " bench " + c);
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_EQ(unprefixed(m.err, "img"),
              std::regex_replace(unprefixed(q.err, "qemu-img"), std::regex("qemu-img"), "img"));
  }
}

// The offsets are qemu-img's: start, start+step, ..., each next offset taken modulo the size;
// 240 requests of 64 KiB every 96 KiB from 1 MiB wrap round an 8 MiB image twice (at 8224 KiB
// -> 32 KiB and 8192 KiB -> 0), where a different wrap would write elsewhere. The pattern byte
// lands on exactly the same ranges.
TEST_F(BenchTest, WritesTheSameRangesAsQemuImg) {
  std::string theirs = dir_.file("q.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + theirs + " 8M").rc, 0);
  const std::string args = " -w -c 240 -d 8 -s 64k -S 96k -o 1M --pattern=0xa5 ";
  ASSERT_EQ(sh("qemu-img bench" + args + theirs).rc, 0);
  auto m = sh(kImg + " bench" + args + image_);
  ASSERT_EQ(m.rc, 0) << m.err;
  auto cmp = sh("qemu-img compare " + image_ + " " + theirs);
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  for (const char* range : {"1M 64k", "32k 64k", "0 64k", "8128k 64k"}) {
    auto r = sh("qemu-io -c 'read -P 0xa5 " + std::string(range) + "' " + image_);
    EXPECT_EQ(r.rc, 0) << range;
    EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos) << range << r.out;
  }
  auto check = sh("qemu-img check " + image_);
  EXPECT_EQ(check.rc, 0) << check.out << check.err;
  // The map agrees too: every written range allocated, the rest not.
  EXPECT_EQ(sh("qemu-img map --output=json " + image_ + " | sed 's/\"offset\": [0-9]*/O/'").out,
            sh("qemu-img map --output=json " + theirs + " | sed 's/\"offset\": [0-9]*/O/'").out);
}

// Ours: --random sends each request to a multiple of the step past -o; a seed repeats the
// pattern, another seed makes another, and nothing lands outside [offset, size).
TEST_F(BenchTest, RandomOffsetsAreAlignedBoundedAndSeeded) {
  std::string a = dir_.file("a.raw"), b = dir_.file("b.raw"), c = dir_.file("c.raw");
  for (const std::string& f : {a, b, c}) ASSERT_EQ(sh("truncate -s 8M " + f).rc, 0);
  const std::string args = " -f raw -w --random -c 40 -s 4k -S 64k -o 2M --pattern=0x5a ";
  ASSERT_EQ(sh(kImg + " bench" + args + "--seed 7 " + a).rc, 0);
  ASSERT_EQ(sh(kImg + " bench" + args + "--seed 7 " + b).rc, 0);
  ASSERT_EQ(sh(kImg + " bench" + args + "--seed 8 " + c).rc, 0);
  EXPECT_EQ(sh("cmp " + a + " " + b).rc, 0) << "the same seed wrote elsewhere";
  EXPECT_NE(sh("cmp " + a + " " + c).rc, 0) << "another seed wrote the same ranges";
  std::string data = imgtest::slurp(a);
  ASSERT_EQ(data.size(), 8u << 20);
  size_t written = 0;
  for (size_t off = 0; off < data.size(); off += 4096) {
    bool hit = data[off] == 0x5a;
    if (hit) {
      ++written;
      EXPECT_GE(off, 2u << 20) << "a write before -o";
      EXPECT_EQ((off - (2u << 20)) % (64 << 10), 0u) << "a write off the step at " << off;
      EXPECT_EQ(data.substr(off, 4096), std::string(4096, '\x5a'));
    } else {
      EXPECT_EQ(data.substr(off, 4096), std::string(4096, '\0')) << off;
    }
  }
  // 40 requests over 96 slots: a few repeat, most do not.
  EXPECT_GT(written, 20u);
  EXPECT_LE(written, 40u);
}

}  // namespace
