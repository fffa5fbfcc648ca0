// img check beside qemu-img 7.2 on images qemu-img made and this test then damaged at known
// offsets: same exit code and report (human and JSON), and after `img check -r all` both tools
// find the image clean. Plus the adversarial findings: bitmaps, reserved bits, snapshot tables,
// sparse 15 TiB files.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>

#include "tool_test_util.h"

namespace imgtest {
namespace {

uint64_t peek64(const std::string& path, off_t off) {
  int fd = ::open(path.c_str(), O_RDONLY);
  uint8_t b[8] = {};
  EXPECT_EQ(::pread(fd, b, 8, off), 8) << path;
  ::close(fd);
  uint64_t v = 0;
  for (uint8_t x : b) v = v << 8 | x;
  return v;
}
void poke(const std::string& path, off_t off, uint64_t v, int bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  uint8_t b[8];
  for (int i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(v >> (8 * (bytes - 1 - i)));
  ASSERT_EQ(::pwrite(fd, b, bytes, off), bytes);
  ::close(fd);
}

// A 64 MiB image, 64 KiB clusters, 128 KiB of data written by qemu-io: refcount table at
// 0x10000, refcount block 0x20000 (16-bit entries), L1 0x30000, L2 0x40000, data in clusters 5
// and 6. The test reads the offsets back rather than trusting this.
struct Layout {
  off_t refblock, l1, l2;
};
Layout make_base(const std::string& f) {
  EXPECT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 64M").rc, 0);
  EXPECT_EQ(sh("qemu-io -c 'write -P 1 0 128k' " + f).rc, 0);
  Layout l;
  l.refblock = static_cast<off_t>(peek64(f, peek64(f, 48)));
  l.l1 = static_cast<off_t>(peek64(f, 40));
  l.l2 = static_cast<off_t>(peek64(f, l.l1) & 0x00fffffffffffe00ull);
  EXPECT_EQ(peek64(f, l.l2) & 0x00fffffffffffe00ull, 5u * 65536) << "unexpected layout";
  return l;
}

struct Damage {
  const char* name;
  void (*apply)(const std::string& f, const Layout& l);
  bool repairable;  // both tools clean after img check -r all
};

const Damage kDamages[] = {
    // A write cut after the refcount update, before the L2 update: cluster 7 allocated, unused.
    {"leak_from_cut_write",
     [](const std::string& f, const Layout& l) {
       poke(f, l.refblock + 7 * 2, 1, 2);
       std::filesystem::resize_file(f, 8 * 65536);
     },
     true},
    {"refcount_too_high",
     [](const std::string& f, const Layout& l) { poke(f, l.refblock + 10, 2, 2); }, true},
    {"refcount_too_low",
     [](const std::string& f, const Layout& l) { poke(f, l.refblock + 10, 0, 2); }, true},
    {"l2_entry_past_end",
     [](const std::string& f, const Layout& l) { poke(f, l.l2 + 16, 0x8000000010000000ull, 8); },
     true},
    {"two_l2_entries_share_a_cluster",
     [](const std::string& f, const Layout& l) { poke(f, l.l2 + 8, peek64(f, l.l2), 8); }, true},
    {"copied_flag_cleared",
     [](const std::string& f, const Layout& l) {
       poke(f, l.l2, peek64(f, l.l2) & ~(1ull << 63), 8);
     },
     true},
    {"l1_reserved_bit",
     [](const std::string& f, const Layout& l) { poke(f, l.l1, peek64(f, l.l1) | 2, 8); }, false},
    {"l2_reserved_bit",
     [](const std::string& f, const Layout& l) { poke(f, l.l2, peek64(f, l.l2) | 2, 8); }, false},
    {"refcount_table_reserved_bit",
     [](const std::string& f, const Layout&) {
       poke(f, static_cast<off_t>(peek64(f, 48)), peek64(f, peek64(f, 48)) | 1, 8);
     },
     true},
};

class ImgCheckDamage : public ::testing::TestWithParam<Damage> {};

TEST_P(ImgCheckDamage, VerdictAndReportMatchQemuImgAndRepairCleans) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  const std::string f = d.file("d.qcow2");
  Layout l = make_base(f);
  GetParam().apply(f, l);
  for (const char* out : {"human", "json"}) {
    std::string args = std::string("check --output=") + out + " " + f;
    CmdResult mine = img(args), ref = sh("qemu-img " + args);
    EXPECT_NE(ref.rc, 0) << "the damage went unnoticed by qemu-img:\n" << ref.out;
    EXPECT_EQ(mine.rc, ref.rc) << args << "\n" << mine.err << "---\n" << ref.err;
    EXPECT_EQ(mine.out, ref.out) << args;
  }
  if (!GetParam().repairable) return;
  CmdResult fix = img("check -r all " + f);
  EXPECT_EQ(fix.rc, 0) << fix.out << fix.err;
  EXPECT_NE(fix.out.find("The following inconsistencies were found and repaired:"),
            std::string::npos)
      << fix.out;
  EXPECT_NE(fix.out.find("Double checking the fixed image now...\nNo errors were found"),
            std::string::npos)
      << fix.out;
  CmdResult q = sh("qemu-img check " + f);
  EXPECT_EQ(q.rc, 0) << q.out << q.err;
  EXPECT_EQ(img("check " + f).rc, 0);
  // The guest data written before the damage reads back through QEMU.
  EXPECT_EQ(sh("qemu-io -c 'read -P 1 0 64k' " + f).rc, 0);
}

INSTANTIATE_TEST_SUITE_P(Known, ImgCheckDamage, ::testing::ValuesIn(kDamages),
                         [](const auto& info) { return std::string(info.param.name); });

// Leaks, refcounts too high and too low: `-r leaks` / `-r all` print what qemu-img prints.
TEST(ImgCheckRepair, RepairReportMatchesQemuImg) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  for (int k = 0; k < 3; ++k) {
    for (const char* mode : {"leaks", "all"}) {
      for (const char* out : {"human", "json"}) {
        const std::string a = d.file("a.qcow2"), b = d.file("b.qcow2");
        Layout l = make_base(a);
        kDamages[k].apply(a, l);
        std::filesystem::copy_file(a, b, std::filesystem::copy_options::overwrite_existing);
        std::string args = std::string("check -r ") + mode + " --output=" + out + " ";
        CmdResult mine = img(args + a), ref = sh("qemu-img " + args + b);
        EXPECT_EQ(mine.rc, ref.rc) << kDamages[k].name << " " << args;
        std::string ref_out = ref.out;
        for (size_t p; (p = ref_out.find(b)) != std::string::npos;) ref_out.replace(p, b.size(), a);
        EXPECT_EQ(mine.out, ref_out) << kDamages[k].name << " " << args;
      }
    }
  }
}

// Regression: bitmaps made by `qemu-img bitmap --add` (with dirty data, so they have tables and
// data clusters) were reported as leaks, destroyed by `img check -r leaks`, and dropped by
// `img convert -n`.
TEST(ImgCheckBitmaps, BitmapsAreReferencedAndSurviveRepairAndConvert) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  const std::string f = d.file("bm.qcow2"), src = d.file("src.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 64M").rc, 0);
  ASSERT_EQ(sh("qemu-img bitmap --add " + f + " b0").rc, 0);
  ASSERT_EQ(sh("qemu-img bitmap --add -g 512k " + f + " b1").rc, 0);
  ASSERT_EQ(sh("qemu-io -c 'write -P 7 0 1M' " + f).rc, 0);  // marks both bitmaps dirty
  ASSERT_EQ(sh("qemu-img check " + f).rc, 0);
  CmdResult c = img("check " + f);
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  EXPECT_EQ(c.out, sh("qemu-img check " + f).out);

  CmdResult r = img("check -r leaks " + f);
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  auto listed = [&](const std::string& p) {
    auto m = flat_json(sh("qemu-img info --output=json " + p).out);
    return m["format-specific.data.bitmaps.0.name"] + m["format-specific.data.bitmaps.1.name"];
  };
  EXPECT_EQ(listed(f), "\"b0\"\"b1\"");
  EXPECT_EQ(sh("qemu-img check " + f).rc, 0);

  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + src + " 64M").rc, 0);
  ASSERT_EQ(sh("qemu-io -c 'write -P 9 0 64k' " + src).rc, 0);
  CmdResult cv = img("convert -n -O qcow2 " + src + " " + f);
  ASSERT_EQ(cv.rc, 0) << cv.err;
  EXPECT_EQ(listed(f), "\"b0\"\"b1\"");
  // libimg did not update them: they must say so (in_use), never claim to be consistent.
  auto m = flat_json(sh("qemu-img info --output=json " + f).out);
  EXPECT_EQ(m["format-specific.data.bitmaps.0.flags.0"], "\"in-use\"");
  EXPECT_EQ(m["format-specific.data.bitmaps.1.flags.0"], "\"in-use\"");
  EXPECT_EQ(sh("qemu-img check " + f).rc, 0);
  EXPECT_EQ(img("check " + f).rc, 0);
  EXPECT_EQ(sh("qemu-io -c 'read -P 9 0 64k' " + f).rc, 0);
}

// Regression: valid tables qemu-img writes (24 bytes of extra data; the last entry's padding past
// the end of the file) were reported as "lies past the end of the table".
TEST(ImgCheckSnapshots, TablesQemuImgWritesAreClean) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  for (const char* opts : {"", "-o cluster_size=512", "-o cluster_size=2M", "-o refcount_bits=8",
                           "-o refcount_bits=64", "-o compat=0.10", "-o lazy_refcounts=on"}) {
    const std::string f = d.file("s.qcow2");
    std::filesystem::remove(f);
    ASSERT_EQ(sh(std::string("qemu-img create -q -f qcow2 ") + opts + " " + f + " 64M").rc, 0);
    ASSERT_EQ(sh("qemu-io -c 'write 0 64k' " + f).rc, 0);
    ASSERT_EQ(sh("qemu-img snapshot -c s1 " + f).rc, 0);
    ASSERT_EQ(sh("qemu-io -c 'write 0 64k' " + f).rc, 0);
    ASSERT_EQ(sh("qemu-img snapshot -c second-snapshot " + f).rc, 0);
    CmdResult mine = img("check " + f), ref = sh("qemu-img check " + f);
    EXPECT_EQ(ref.rc, 0) << opts;
    EXPECT_EQ(mine.rc, ref.rc) << opts << "\n" << mine.err;
    EXPECT_EQ(mine.out, ref.out) << opts;
  }
}

// Regression: nb_snapshots past the real entries went unreported.
TEST(ImgCheckSnapshots, IncompleteEntryIsCorruption) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  const std::string f = d.file("s.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 64M").rc, 0);
  ASSERT_EQ(sh("qemu-img snapshot -c s1 " + f).rc, 0);
  poke(f, 60, 2, 4);  // nb_snapshots: one more than the table holds
  CmdResult mine = img("check " + f), ref = sh("qemu-img check " + f);
  EXPECT_EQ(ref.rc, 2);
  EXPECT_EQ(mine.rc, ref.rc);
  EXPECT_EQ(mine.out, ref.out);
  EXPECT_NE(mine.err.find("ERROR snapshot table entry 1 is incomplete"), std::string::npos)
      << mine.err;
}

// Regression: a sparse tail to 15 TiB aborted on bad_alloc (512-byte clusters) and took seconds
// (64 KiB clusters). Time and memory now follow the metadata.
TEST(ImgCheckLargeFile, SparseTailFollowsMetadata) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  const std::string small = d.file("c512.qcow2"), big = d.file("c64k.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o cluster_size=512 " + small + " 1G").rc, 0);
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + big + " 1G").rc, 0);
  ASSERT_EQ(sh("truncate -s 15T " + small + " " + big).rc, 0);
  CmdResult s = img("check " + small);
  EXPECT_EQ(s.rc, sh("qemu-img check " + small).rc);
  EXPECT_EQ(s.rc, 1);
  EXPECT_NE(s.err.find("Check failed: File too large"), std::string::npos) << s.err;
  auto t0 = std::chrono::steady_clock::now();
  CmdResult b = img("check " + big);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(b.rc, 0) << b.err;
  EXPECT_EQ(b.out, sh("qemu-img check " + big).out);
  EXPECT_LT(secs, 1.0) << "check of a sparse 15 TiB file should not visit its holes";
}

}  // namespace
}  // namespace imgtest
