// img check: qemu-img's exit codes (0 clean, 2 corruptions, 3 leaks, 63 raw), report and JSON
// fields, on images patched at known offsets.
#include <fcntl.h>
#include <unistd.h>

#include "tool_test_util.h"

namespace imgtest {
namespace {

// A fresh 1 GiB qcow2 image with 64 KiB clusters lays out header, refcount table (0x10000),
// refcount block (0x20000) and L1 table (0x30000); refcount entries are 16-bit big-endian.
constexpr off_t kRefblock = 0x20000;

void poke16(const std::string& path, off_t off, uint16_t value) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  uint8_t b[2] = {static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value)};
  ASSERT_EQ(::pwrite(fd, b, 2, off), 2);
  ::close(fd);
}

std::string make_image(const TempDir& d, const std::string& name) {
  std::string f = d.file(name);
  CmdResult r = img("create -q -f qcow2 " + f + " 1G");
  EXPECT_EQ(r.rc, 0) << r.err;
  return f;
}

// Cluster 4 gets a reference count but nothing refers to it.
std::string make_leaky(const TempDir& d) {
  std::string f = make_image(d, "leaky.qcow2");
  std::filesystem::resize_file(f, 5 * 65536);
  poke16(f, kRefblock + 4 * 2, 1);
  return f;
}

// The refcount table's cluster (1) claims refcount 0 though the header points to it.
std::string make_corrupt(const TempDir& d) {
  std::string f = make_image(d, "corrupt.qcow2");
  poke16(f, kRefblock + 1 * 2, 0);
  return f;
}

TEST(ImgCheck, CleanImageExitsZero) {
  TempDir d;
  std::string f = make_image(d, "clean.qcow2");
  CmdResult r = img("check " + f);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("No errors were found on the image."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Image end offset: 262144"), std::string::npos) << r.out;
  CmdResult j = img("check --output=json " + f);
  EXPECT_EQ(j.rc, 0);
  auto m = flat_json(j.out);
  EXPECT_EQ(m["check-errors"], "0");
  EXPECT_EQ(m["format"], "\"qcow2\"");
  EXPECT_EQ(m["total-clusters"], "16384");
  EXPECT_EQ(m.count("leaks"), 0u);
  EXPECT_EQ(img("check -q " + f).out, "");
}

TEST(ImgCheck, CorruptImageExitsTwo) {
  TempDir d;
  std::string f = make_corrupt(d);
  CmdResult r = img("check " + f);
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_NE(r.out.find("1 errors were found on the image."), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("ERROR cluster 1 refcount=0 reference=1"), std::string::npos) << r.err;
  CmdResult j = img("check --output=json " + f);
  EXPECT_EQ(j.rc, 2);
  EXPECT_EQ(flat_json(j.out)["corruptions"], "1");
}

TEST(ImgCheck, LeakyImageExitsThreeAndRepairs) {
  TempDir d;
  std::string f = make_leaky(d);
  CmdResult r = img("check " + f);
  EXPECT_EQ(r.rc, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("1 leaked clusters were found on the image."), std::string::npos);
  EXPECT_EQ(flat_json(img("check --output=json " + f).out)["leaks"], "1");
  CmdResult fix = img("check -r leaks " + f);
  EXPECT_EQ(fix.rc, 0) << fix.out << fix.err;
  EXPECT_NE(fix.out.find("Double checking the fixed image now..."), std::string::npos);
  EXPECT_EQ(img("check " + f).rc, 0);
  if (have_qemu_img()) {
    EXPECT_EQ(sh("qemu-img check " + f).rc, 0);
  }
}

TEST(ImgCheck, MatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  for (const std::string& f : {make_image(d, "c.qcow2"), make_leaky(d), make_corrupt(d)}) {
    for (const char* out : {"human", "json"}) {
      std::string args = std::string("check --output=") + out + " " + f;
      CmdResult mine = img(args), ref = sh("qemu-img " + args);
      EXPECT_EQ(mine.rc, ref.rc) << args;
      EXPECT_EQ(mine.out, ref.out) << args;
    }
  }
}

TEST(ImgCheck, RawIsNotCheckable) {
  TempDir d;
  ASSERT_EQ(img("create -q -f raw r.raw 1M", d.path()).rc, 0);
  CmdResult r = img("check r.raw", d.path());
  EXPECT_EQ(r.rc, 63);
  EXPECT_NE(r.err.find("does not support checks"), std::string::npos) << r.err;
  EXPECT_EQ(img("check --output=json r.raw", d.path()).rc, 63);
}

}  // namespace
}  // namespace imgtest
