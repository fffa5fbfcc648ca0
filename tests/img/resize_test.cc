// img resize beside qemu-img resize on copies of the same input: same exit code, same stdout,
// same stderr (after the program name), same resulting virtual size and contents; images img
// resized pass qemu-img check and read back in qemu-io, and images qemu-img resized read back
// in img.
#include "tool_test_util.h"

namespace imgtest {
namespace {

std::string strip_prog(std::string s, const std::string& prog) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find('\n', i);
    std::string line = s.substr(i, j == std::string::npos ? std::string::npos : j - i + 1);
    if (line.rfind(prog + ": ", 0) == 0) line = line.substr(prog.size() + 2);
    // qemu-img's warning for a probed raw image (img does not restrict block 0).
    if (line.rfind("WARNING: Image format was not specified", 0) == 0 ||
        line.rfind("         ", 0) == 0) {
      line.clear();
    }
    out += line;
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

std::string virtual_size(const std::string& path) {
  CmdResult r = sh("qemu-img info --output=json " + path);
  return flat_json(r.out)["virtual-size"];
}

// Runs "resize ARGS FILE SIZE" on a copy each and compares everything a user sees.
void same_as_qemu(const TempDir& d, const std::string& src, const std::string& args,
                  const std::string& size) {
  SCOPED_TRACE("resize " + args + " FILE " + size);
  std::string q = d.file("q.img"), m = d.file("m.img");
  ASSERT_EQ(sh("cp " + src + " " + q + " && cp " + src + " " + m).rc, 0);
  CmdResult qr = sh("qemu-img resize " + args + " " + q + " " + size);
  CmdResult mr = img("resize " + args + " " + m + " " + size);
  EXPECT_EQ(mr.rc, qr.rc);
  EXPECT_EQ(mr.out, qr.out);
  EXPECT_EQ(strip_prog(mr.err, "img"), strip_prog(qr.err, "qemu-img"));
  EXPECT_EQ(virtual_size(m), virtual_size(q));
  EXPECT_EQ(sh("qemu-img compare -q " + q + " " + m).rc, 0) << "contents differ";
  if (sh("qemu-img info " + m + " | grep -q 'file format: qcow2'").rc == 0) {
    CmdResult c = sh("qemu-img check " + m);
    EXPECT_EQ(c.rc, 0) << c.out << c.err;
  }
}

std::string make_qcow2(const TempDir& d, const std::string& opts, const std::string& size) {
  std::string f = d.file("src.qcow2");
  EXPECT_EQ(
      sh("qemu-img create -q -f qcow2 " + opts + " " + f + " " + size +
         " && qemu-io -c 'write -P 0xab 0 100k' -c 'write -P 0xcd 700k 64k' " + f + " >/dev/null")
          .rc,
      0);
  return f;
}

TEST(ImgResize, Qcow2MessagesExitCodesAndResultsMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string src = make_qcow2(d, "", "1M");
  const std::pair<const char*, const char*> cases[] = {
      {"", "2M"},
      {"", "+1M"},
      {"-q", "+1M"},
      {"", "1M"},  // same size: "Image resized."
      {"", "512k"},
      {"", "-512k"},
      {"--shrink", "512k"},
      {"--shrink", "-512k"},
      {"--shrink", "-1M"},
      {"--shrink", "0"},
      {"", "1000000"},
      {"", "8E"},
      {"", "20E"},
      {"", "xyz"},
      {"--preallocation=bogus", "2M"},
      {"--preallocation=full", "1M"},
      {"--preallocation=falloc --shrink", "512k"},
      {"--preallocation=metadata", "3M"},
      {"--preallocation=falloc", "3M"},
      {"--preallocation=full", "3M"},
      {"-f qcow2", "+1.5k"},
      {"", "64T"},
  };
  for (const auto& [args, size] : cases) same_as_qemu(d, src, args, size);
}

TEST(ImgResize, L1RelocationAndTheL1CapMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  // 512-byte clusters: 1 MiB needs 32 L1 entries, 128 GiB the full 32 MiB table.
  std::string src = make_qcow2(d, "-o cluster_size=512", "1M");
  same_as_qemu(d, src, "", "100M");
  same_as_qemu(d, src, "", "128G");
  same_as_qemu(d, src, "", "129G");  // "Failed to grow the L1 table: File too large"
  same_as_qemu(d, src, "--shrink", "40k");
  same_as_qemu(d, src, "--preallocation=metadata", "5M");
}

TEST(ImgResize, RawMatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = d.file("src.raw");
  ASSERT_EQ(sh("head -c 3M /dev/urandom > " + src).rc, 0);
  const std::pair<const char*, const char*> cases[] = {
      {"", "4M"},
      {"", "2M"},
      {"--shrink", "1001"},
      {"-f raw --shrink", "-1M"},
      {"-f raw", "5M"},
      {"--preallocation=full", "5M"},
      {"--preallocation=falloc", "5M"},
      {"--preallocation=metadata", "5M"},
  };
  for (const auto& [args, size] : cases) same_as_qemu(d, src, args, size);
}

TEST(ImgResize, UsageErrorsMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = make_qcow2(d, "", "1M");
  for (const char* args : {"", "x.qcow2", "a b 1M"}) {
    CmdResult q = sh(std::string("qemu-img resize ") + args);
    CmdResult m = img(std::string("resize ") + args);
    EXPECT_EQ(m.rc, q.rc) << args;
    EXPECT_EQ(m.rc, 1) << args;
    auto first_line = [](const std::string& t) { return t.substr(0, t.find('\n')); };
    EXPECT_EQ(first_line(strip_prog(m.err, "img")), first_line(strip_prog(q.err, "qemu-img")))
        << args;
  }
  CmdResult m = img("resize nope.qcow2 1M", d.path());
  EXPECT_EQ(m.rc, 1);
  EXPECT_NE(m.err.find("Could not open 'nope.qcow2': No such file or directory"), std::string::npos)
      << m.err;
}

TEST(ImgResize, V2ImageWithSnapshotsIsRefusedAsQemuImgDoes) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = d.file("v2.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o compat=0.10 " + src +
               " 4M && qemu-img snapshot -c s1 " + src)
                .rc,
            0);
  same_as_qemu(d, src, "", "8M");
  same_as_qemu(d, src, "--shrink", "2M");
}

// Interop both ways: data written before the resize and after it, read by the other side.
TEST(ImgResize, ImgResizedImagesReadBackInQemuIo) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string f = make_qcow2(d, "-o cluster_size=512", "1M");
  ASSERT_EQ(img("resize -q " + f + " 20M").rc, 0);
  CmdResult w = sh("qemu-io -c 'write -P 0xee 19M 1M' " + f);
  ASSERT_EQ(w.rc, 0) << w.out;
  ASSERT_EQ(img("resize -q --shrink " + f + " 19.5M").rc, 0);
  ASSERT_EQ(img("resize -q --preallocation=full " + f + " 21M").rc, 0);
  CmdResult c = sh("qemu-img check " + f);
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  CmdResult r =
      sh("qemu-io -c 'read -P 0xab 0 100k' -c 'read -P 0xcd 700k 64k' -c 'read -P 0 "
         "1M 18M' -c 'read -P 0xee 19M 512k' -c 'read -P 0 19968k 1536k' " +
         f);
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out.find("failed"), std::string::npos) << r.out;
  EXPECT_EQ(virtual_size(f), std::to_string(21 << 20));
}

TEST(ImgResize, QemuResizedImagesReadBackInImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string f = make_qcow2(d, "-o cluster_size=512", "1M");
  ASSERT_EQ(sh("qemu-img resize -q " + f + " 100M && qemu-io -c 'write -P 0x77 99M 1M' " + f +
               " >/dev/null && qemu-img resize -q --shrink " + f + " 99.5M")
                .rc,
            0);
  ASSERT_EQ(img("convert -O raw " + f + " " + d.file("mine.raw")).rc, 0);
  ASSERT_EQ(sh("qemu-img convert -O raw " + f + " " + d.file("ref.raw")).rc, 0);
  EXPECT_EQ(sh("cmp " + d.file("mine.raw") + " " + d.file("ref.raw")).rc, 0);
  // And img can resize it further: grow and shrink again, still clean for qemu-img check.
  ASSERT_EQ(img("resize -q " + f + " 200M").rc, 0);
  ASSERT_EQ(img("resize -q --shrink " + f + " 99M").rc, 0);
  CmdResult c = sh("qemu-img check " + f);
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  CmdResult r = sh("qemu-io -c 'read -P 0xab 0 100k' -c 'read -P 0 1M 98M' " + f);
  EXPECT_EQ(r.out.find("failed"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace imgtest
