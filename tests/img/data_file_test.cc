// img on images with an external data file (create -o data_file=,data_file_raw=; info, check,
// map, amend, convert), each compared with qemu-img 7.2 on the same files: the same output, the
// same errors, the same exit codes, and a relative data file name opened from the working
// directory, as qemu opens it.
#include "tool_test_util.h"

namespace imgtest {
namespace {

// Runs `args` with img in dir_a and with qemu-img in dir_b (same file names), and expects the
// same exit code and output, the program names aside.
void expect_same_run(const TempDir& a, const TempDir& b, const std::string& args) {
  CmdResult mine = img(args, a.path());
  CmdResult ref = sh("qemu-img " + args, b.path());
  EXPECT_EQ(mine.rc, ref.rc) << args << "\nimg: " << mine.err << "\nqemu-img: " << ref.err;
  EXPECT_EQ(mine.out, ref.out) << args;
  EXPECT_EQ(unprefixed(mine.err, "img"), unprefixed(ref.err, "qemu-img")) << args;
}

// img and qemu-img print the same info, check and map of file (in dir), in both output forms.
void expect_same_reports(const TempDir& d, const std::string& file) {
  for (const char* cmd :
       {"info", "info --output=json", "check", "check --output=json", "map", "map --output=json"}) {
    std::string args = std::string(cmd) + " " + file;
    CmdResult mine = img(args, d.path());
    CmdResult ref = sh("qemu-img " + args, d.path());
    EXPECT_EQ(mine.rc, ref.rc) << args << mine.err;
    EXPECT_EQ(mine.out, ref.out) << args;
  }
}

TEST(ImgDataFile, CreateSaysWhatQemuImgSays) {
  REQUIRE_QEMU_IMG();
  TempDir a, b;
  for (const char* c : {
           "-f qcow2 -o data_file=d.raw x.qcow2 1M",
           "-f qcow2 -o data_file=r.raw,data_file_raw=on y.qcow2 3M",
           "-f qcow2 -o data_file=p.raw,preallocation=falloc z.qcow2 1M",
           // Refused, in qemu-img's words.
           "-f qcow2 -o data_file_raw=on e1.qcow2 1M",
           "-f qcow2 -o compat=0.10,data_file=e.raw e2.qcow2 1M",
           "-f qcow2 -b x.qcow2 -F qcow2 -o data_file=f.raw,data_file_raw=on e3.qcow2",
           "-f qcow2 -o data_file_raw=maybe,data_file=g.raw e4.qcow2 1M",
       }) {
    expect_same_run(a, b, std::string("create ") + c);
  }
  // The data file is the virtual size; falloc reserved its blocks.
  for (const char* f : {"d.raw", "r.raw", "p.raw"}) {
    EXPECT_EQ(std::filesystem::file_size(a.file(f)), std::filesystem::file_size(b.file(f))) << f;
  }
  struct stat st {};
  ASSERT_EQ(stat(a.file("p.raw").c_str(), &st), 0);
  EXPECT_GE(uint64_t(st.st_blocks) * 512, 1u << 20);
  // Either tool reads the other's images: the same info, check and map.
  for (const char* f : {"x.qcow2", "y.qcow2", "z.qcow2"}) expect_same_reports(a, f);
  CmdResult help = img("create -f qcow2 -o help");
  CmdResult qhelp = sh("qemu-img create -f qcow2 -o help");
  for (const char* line : {"data_file=<str>", "data_file_raw=<bool (on/off)> - The external"}) {
    EXPECT_NE(qhelp.out.find(line), std::string::npos) << line;
    EXPECT_NE(help.out.find(line), std::string::npos) << line;
  }
}

TEST(ImgDataFile, InfoCheckAndMapMatchOnQemuWrittenImages) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  // A bitmap makes qemu-img map take a small image for a metadata-preallocated one, whose data
  // runs it then splits at the holes of the data file; img map guesses the same.
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o data_file=a.raw,lazy_refcounts=on a.qcow2 4M && "
               "qemu-io -c 'write -P 1 0 100k' -c 'write -z 1M 64k' -c 'write -P 2 3M 8k' "
               "a.qcow2 && "
               "qemu-img create -q -f qcow2 -o data_file=bm.raw bm.qcow2 1M && "
               "qemu-img bitmap --add bm.qcow2 b0 && "
               "qemu-img create -q -f qcow2 -o data_file=r.raw,data_file_raw=on r.qcow2 2M && "
               "qemu-io -c 'write -P 3 4k 64k' -c 'discard 1M 64k' r.qcow2",
               d.path())
                .rc,
            0);
  for (const char* f : {"a.qcow2", "r.qcow2", "bm.qcow2"}) expect_same_reports(d, f);
}

TEST(ImgDataFile, ARelativeNameIsOpenedFromTheWorkingDirectory) {
  REQUIRE_QEMU_IO();
  TempDir d;
  std::filesystem::create_directories(d.file("sub"));
  // qemu-img creates ./dd.raw and records "dd.raw"; opening sub/a.qcow2 finds ./dd.raw.
  CmdResult c = img("create -q -f qcow2 -o data_file=dd.raw sub/a.qcow2 1M", d.path());
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_TRUE(std::filesystem::exists(d.file("dd.raw")));
  EXPECT_FALSE(std::filesystem::exists(d.file("sub/dd.raw")));
  ASSERT_EQ(sh("qemu-io -c 'write -P 0x42 0 4k' sub/a.qcow2", d.path()).rc, 0);
  CmdResult cmp = img("compare -q sub/a.qcow2 dd.raw", d.path());
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  // From inside sub/ neither tool finds it.
  CmdResult mine = img("compare sub/a.qcow2 ../dd.raw", d.file("sub"));
  CmdResult ref = sh("qemu-io -r -c 'read 0 4k' a.qcow2", d.file("sub"));
  EXPECT_NE(ref.rc, 0);
  EXPECT_NE(ref.err.find("Could not open 'dd.raw': No such file or directory"), std::string::npos)
      << ref.err;
  EXPECT_NE(mine.rc, 0);
  mine = img("convert -O raw a.qcow2 out.raw", d.file("sub"));
  EXPECT_NE(mine.rc, 0);
  EXPECT_NE(mine.err.find("Could not open 'dd.raw': No such file or directory"), std::string::npos)
      << mine.err;
}

TEST(ImgDataFile, CheckOfAnImageWhoseDataFileIsMissingFailsAsQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir a, b;
  for (const TempDir* t : {&a, &b}) {
    ASSERT_EQ(
        sh("qemu-img create -q -f qcow2 -o data_file=gone.raw c.qcow2 1M && rm gone.raw", t->path())
            .rc,
        0);
  }
  expect_same_run(a, b, "check c.qcow2");
  expect_same_run(a, b, "check --output=json c.qcow2");
}

TEST(ImgDataFile, AmendChangesTheNameAndDropsTheRawBitAsQemuImgDoes) {
  REQUIRE_QEMU_IMG();
  TempDir a, b;
  for (const TempDir* t : {&a, &b}) {
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o data_file=r.raw,data_file_raw=on r.qcow2 1M && "
                 "qemu-img create -q -f qcow2 n.qcow2 1M",
                 t->path())
                  .rc,
              0);
  }
  for (const char* c : {
           "amend -o data_file=n.raw n.qcow2",  // no data file to rename
           "amend -o data_file_raw=on n.qcow2",
           "amend -o data_file_raw=off r.qcow2",
           "amend -o data_file_raw=on r.qcow2",  // cannot be set again
           "info r.qcow2",
           "amend -o data_file=other.raw r.qcow2",
           "info --output=json r.qcow2",
           "amend -o compat=0.10 r.qcow2",
       }) {
    if (std::string(c).starts_with("amend -o data_file=other")) {
      // Renamed, not moved: the file must be there under its new name afterwards.
      std::filesystem::copy_file(a.file("r.raw"), a.file("other.raw"));
      std::filesystem::copy_file(b.file("r.raw"), b.file("other.raw"));
    }
    expect_same_run(a, b, c);
  }
}

TEST(ImgDataFile, ConvertIntoADataFileAndCompressionRefused) {
  REQUIRE_QEMU_IMG();
  TempDir a, b;
  for (const TempDir* t : {&a, &b}) {
    ASSERT_EQ(sh("qemu-img create -q -f qcow2 s.qcow2 2M && "
                 "qemu-io -c 'write -P 7 64k 300k' -c 'write -P 9 1500k 10k' s.qcow2",
                 t->path())
                  .rc,
              0);
  }
  expect_same_run(a, b, "convert -O qcow2 -o data_file=t.raw s.qcow2 t.qcow2");
  expect_same_run(a, b, "compare s.qcow2 t.qcow2");
  expect_same_run(a, b, "compare -f raw -F qcow2 t.raw s.qcow2");
  expect_same_run(a, b, "check t.qcow2");
  expect_same_run(a, b, "map --output=json t.qcow2");
  // Compressed clusters cannot live in a data file: qemu-img fails the first write.
  CmdResult mine = img("convert -c -O qcow2 -o data_file=c.raw s.qcow2 c.qcow2", a.path());
  CmdResult ref = sh("qemu-img convert -c -O qcow2 -o data_file=c.raw s.qcow2 c.qcow2", b.path());
  EXPECT_NE(ref.rc, 0);
  EXPECT_EQ(mine.rc, ref.rc) << mine.err;
  EXPECT_NE(ref.err.find("Operation not supported"), std::string::npos) << ref.err;
  EXPECT_NE(mine.err.find("Operation not supported"), std::string::npos) << mine.err;
  // And internal snapshots.
  expect_same_run(a, b, "snapshot -c s1 t.qcow2");
}

}  // namespace
}  // namespace imgtest
