// img amend beside qemu-img amend on copies of the same image: same exit code, stdout and
// stderr (after the program name); the amended images pass qemu-img check, qemu-img info shows
// the same compat / refcount bits / lazy refcounts / size for both, and the guest contents read
// the same in qemu-img. Images qemu-img amended read the same in img.
#include "tool_test_util.h"

namespace imgtest {
namespace {

// The format-specific facts qemu-img info reports, as one comparable string.
std::string facts(const std::string& path) {
  auto j = flat_json(sh("qemu-img info --output=json " + path).out);
  return "compat=" + j["format-specific.data.compat"] +
         " refcount-bits=" + j["format-specific.data.refcount-bits"] +
         " lazy=" + j["format-specific.data.lazy-refcounts"] +
         " compression=" + j["format-specific.data.compression-type"] +
         " size=" + j["virtual-size"];
}

// Data, zero clusters (plain and allocated), a compressed cluster and an internal snapshot.
std::string make_image(const TempDir& d, const std::string& opts, bool snapshot = true) {
  std::string f = d.file("src.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + opts + " " + f +
                    " 4M && qemu-io -c 'write -P 0xab 0 192k' -c 'write -z 64k 64k' "
                    "-c 'write -z 1M 64k' -c 'write -c -P 0x11 2M 64k' " +
                    f + " >/dev/null";
  if (snapshot) cmd += " && qemu-img snapshot -c s1 " + f;
  EXPECT_EQ(sh(cmd).rc, 0);
  return f;
}

void same_as_qemu(const TempDir& d, const std::string& src, const std::string& args) {
  SCOPED_TRACE("amend " + args);
  std::string q = d.file("q.qcow2"), m = d.file("m.qcow2");
  ASSERT_EQ(sh("cp " + src + " " + q + " && cp " + src + " " + m).rc, 0);
  CmdResult qr = sh("qemu-img amend " + args + " " + q);
  CmdResult mr = img("amend " + args + " " + m);
  EXPECT_EQ(mr.rc, qr.rc);
  EXPECT_EQ(mr.out, qr.out);
  EXPECT_EQ(unprefixed(mr.err, "img"), unprefixed(qr.err, "qemu-img"));
  EXPECT_EQ(facts(m), facts(q));
  CmdResult c = sh("qemu-img check " + m);
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  EXPECT_EQ(sh("qemu-img compare -q " + q + " " + m).rc, 0) << "contents differ";
  EXPECT_EQ(sh("qemu-img snapshot -l " + q + " | wc -l").out,
            sh("qemu-img snapshot -l " + m + " | wc -l").out);
}

TEST(ImgAmend, MessagesExitCodesAndResultsMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string src = make_image(d, "-o compat=1.1");
  // Option errors are unit-tested (qcow2_amend_test.cc); here what changes images, and one
  // error of each step.
  for (const char* args :
       {"-o compat=0.10",  // zero clusters expanded, snapshot kept
        "-o lazy_refcounts=on", "-o refcount_bits=8", "-o refcount_bits=2",
        "-o refcount_bits=1",  // the snapshot shares clusters: refcount 2
        "-o compat=0.10,lazy_refcounts=on",
        "-o lazy_refcounts=on -o compat=0.10",  // lazy set, then the downgrade drops it
        "-o cluster_size=4096", "-o foo=bar", "-o backing_file=x.qcow2", "-o data_file=x.raw",
        "-q -o compat=0.10", "-o help"}) {
    same_as_qemu(d, src, args);
  }
}

TEST(ImgAmend, DowngradeRefusalsAndUpgradeMatchQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  same_as_qemu(d, make_image(d, "-o refcount_bits=8"), "-o compat=0.10");
  same_as_qemu(d, make_image(d, "-o compression_type=zstd"), "-o compat=0.10");
  same_as_qemu(d, make_image(d, "-o lazy_refcounts=on"), "-o compat=0.10");
  // Without snapshots a size change is a resize, a shrink included.
  same_as_qemu(d, make_image(d, "", false), "-o size=8M");
  same_as_qemu(d, make_image(d, "", false), "-o size=1M");
  std::string v2 = make_image(d, "-o compat=0.10");
  same_as_qemu(d, v2, "-o compat=1.1,lazy_refcounts=on,refcount_bits=4");
  same_as_qemu(d, v2, "-o refcount_bits=8");
}

TEST(ImgAmend, ZeroClustersOverABackingFileReadTheSameAfterADowngrade) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  std::string base = d.file("base.qcow2"), src = d.file("src.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + base + " 1M && qemu-io -c 'write -P 9 0 1M' " +
               base + " >/dev/null && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + src +
               " && qemu-io -c 'write -z 0 64k' -c 'write -P 3 128k 64k' " + src + " >/dev/null")
                .rc,
            0);
  CmdResult r = img("amend -o compat=0.10 " + src);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(sh("qemu-img check -q " + src).rc, 0);
  CmdResult io = sh("qemu-io -c 'read -P 0 0 64k' -c 'read -P 9 64k 64k' -c 'read -P 3 128k 64k' " +
                    src + " | grep -c '^read'");
  EXPECT_EQ(io.out, "3\n") << "the zeroed cluster shows the backing file through";
  EXPECT_NE(facts(src).find("compat=\"0.10\""), std::string::npos) << facts(src);
}

TEST(ImgAmend, ImagesQemuImgAmendedReadTheSameInImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  for (const char* args : {"-o refcount_bits=2", "-o compat=0.10"}) {
    SCOPED_TRACE(args);
    std::string src = make_image(d, "");
    std::string orig = d.file("orig.qcow2");
    ASSERT_EQ(sh("cp " + src + " " + orig + " && qemu-img amend " + args + " " + src).rc, 0);
    CmdResult c = img("check " + src);
    EXPECT_EQ(c.rc, 0) << c.out << c.err;
    CmdResult cmp = img("compare " + orig + " " + src);
    EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
    // And img writes on: amend back, then qemu-img checks it.
    CmdResult back = img("amend -o compat=1.1,refcount_bits=16,lazy_refcounts=off " + src);
    EXPECT_EQ(back.rc, 0) << back.err;
    EXPECT_EQ(sh("qemu-img check -q " + src).rc, 0);
    EXPECT_EQ(sh("qemu-img compare -q " + orig + " " + src).rc, 0);
  }
}

TEST(ImgAmend, RawAndProgress) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string raw = d.file("x.raw");
  ASSERT_EQ(sh("qemu-img create -q -f raw " + raw + " 1M").rc, 0);
  for (const char* args : {"-f raw -o size=2M ", "-f raw -o help ", "-f qcow2 -o help "}) {
    SCOPED_TRACE(args);
    CmdResult q = sh(std::string("qemu-img amend ") + args + raw);
    CmdResult m = img(std::string("amend ") + args + raw);
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_EQ(m.out, q.out);
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
  }
  std::string src = make_image(d, "");
  CmdResult p = img("amend -p -o refcount_bits=32 " + src);
  EXPECT_EQ(p.rc, 0) << p.err;
  EXPECT_NE(p.out.find("(100.00/100%)\r\n"), std::string::npos) << p.out;
  EXPECT_EQ(sh("qemu-img check -q " + src).rc, 0);
}

}  // namespace
}  // namespace imgtest
