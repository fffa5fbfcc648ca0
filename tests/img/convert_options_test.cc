// img convert's options beside qemu-img 7.2 convert's, on the same files: bad flag combinations
// get qemu-img's words and exit code and leave no target; -S decides the target's allocation as
// it does for qemu-img (qemu-img map --output=json of both targets agree); -n, --target-is-zero,
// -B/-F, -C, -W, -t, -T and several sources give images that qemu-img reads back byte for byte
// as the source.
#include <filesystem>
#include <sstream>

#include "tool_test_util.h"

namespace imgtest {
namespace {

// The allocation qemu-img sees in an image: its map with neighbouring entries of the same kind
// merged and host offsets left out (two writers lay out host clusters and metadata differently;
// which guest ranges are data, zeros or unallocated is what the options decide).
std::string map_of(const std::string& path, const std::string& fmt) {
  CmdResult r = sh("qemu-img map --output=json -f " + fmt + " '" + path +
                   "' | sed -n 's/.*\"start\": \\([0-9]*\\), \"length\": \\([0-9]*\\), "
                   "\\(.*\"data\": [a-z]*\\).*/\\1 \\2 \\3/p'");
  EXPECT_EQ(r.rc, 0) << r.err;
  std::istringstream in(r.out);
  std::string out, kind, last_kind;
  uint64_t start = 0, len = 0, run_start = 0, run_len = 0;
  while (in >> start >> len && std::getline(in, kind)) {
    if (run_len > 0 && kind == last_kind && run_start + run_len == start) {
      run_len += len;
      continue;
    }
    if (run_len > 0)
      out += std::to_string(run_start) + " +" + std::to_string(run_len) + last_kind + "\n";
    run_start = start;
    run_len = len;
    last_kind = kind;
  }
  if (run_len > 0)
    out += std::to_string(run_start) + " +" + std::to_string(run_len) + last_kind + "\n";
  EXPECT_FALSE(out.empty()) << r.out;
  return out;
}

// Source data whose zero runs sit at every interesting length and alignment: 512 bytes, 3.5 KiB,
// 4 KiB, 8 KiB, 12 KiB, 64 KiB, 1 MiB, inside data and at the start of 2 MiB buffers, on a raw
// file with holes.
std::string make_pattern_raw(const TempDir& d) {
  std::string f = d.file("pattern.raw");
  std::string cmd = "truncate -s 8M " + f;
  // [offset KiB, length KiB] of random data.
  const int pieces[][2] = {{0, 3},    {3, 1},     {4, 0},    {5, 4},      {13, 8},
                           {25, 4},   {41, 60},   {165, 4},  {1193, 900}, {2048, 1},
                           {2056, 4}, {4090, 12}, {6000, 1}, {8188, 4}};
  for (auto& p : pieces) {
    if (p[1] == 0) continue;
    cmd += " && head -c " + std::to_string(p[1] * 1024) + " /dev/urandom | dd of=" + f +
           " bs=1024 seek=" + std::to_string(p[0]) + " conv=notrunc status=none";
  }
  // Explicit zeros written as data (an allocated run of zeros), and a single 512-byte sector.
  cmd +=
      " && head -c 131072 /dev/zero | dd of=" + f + " bs=1024 seek=3000 conv=notrunc status=none";
  cmd +=
      " && head -c 512 /dev/urandom | dd of=" + f + " bs=512 seek=14000 conv=notrunc status=none";
  EXPECT_EQ(sh(cmd).rc, 0);
  return f;
}

TEST(ImgConvertOptions, BadFlagCombinationsAsQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 1M && qemu-img create -q -f raw b.raw 1M && "
               "qemu-img create -q -f raw small.raw 512k",
               d.path())
                .rc,
            0);
  const char* cases[] = {
      "-C -c -O qcow2 a.qcow2 out",
      "-C -S 4k a.qcow2 out",
      "-n -o cluster_size=4k a.qcow2 out",
      "--target-is-zero a.qcow2 out",
      "-S 1000 a.qcow2 out",
      "-S 32M a.qcow2 out",
      "-S abc a.qcow2 out",
      "-m 0 a.qcow2 out",
      "-m 17 a.qcow2 out",
      "-m x a.qcow2 out",
      "-T bogus a.qcow2 out",
      "a.qcow2",
      "-O qcow2 -B a.qcow2 -F qcow2 a.qcow2 b.raw out",
      "-O qcow2 -B a.qcow2 a.qcow2 out",
      "-O qcow2 -o backing_file=a.qcow2 a.qcow2 out",
      "-n a.qcow2 small.raw",
      "-c a.qcow2 out",
      "-O nosuchfmt a.qcow2 out",
  };
  for (const char* c : cases) {
    SCOPED_TRACE(c);
    CmdResult q = sh("qemu-img convert " + std::string(c), d.path());
    bool q_made = std::filesystem::exists(d.file("out"));
    std::filesystem::remove(d.file("out"));
    CmdResult m = img("convert " + std::string(c), d.path());
    bool m_made = std::filesystem::exists(d.file("out"));
    std::filesystem::remove(d.file("out"));
    EXPECT_EQ(m.rc, q.rc);
    EXPECT_NE(m.rc, 0);
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
    EXPECT_FALSE(q_made);
    EXPECT_FALSE(m_made);
  }
}

// qemu-img creates the target before it looks at -t; img refuses first and leaves nothing.
TEST(ImgConvertOptions, BadTargetCacheLeavesNoTarget) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 1M", d.path()).rc, 0);
  CmdResult q = sh("qemu-img convert -t bogus a.qcow2 out", d.path());
  std::filesystem::remove(d.file("out"));
  CmdResult m = img("convert -t bogus a.qcow2 out", d.path());
  EXPECT_EQ(m.rc, q.rc);
  EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img"));
  EXPECT_FALSE(std::filesystem::exists(d.file("out")));
}

// Allocation follows -S as qemu-img's does, to raw and to qcow2 with 4 KiB clusters (small
// enough that every decision shows in the map).
TEST(ImgConvertOptions, SparseDetectionAllocatesAsQemuImg) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = make_pattern_raw(d);
  for (std::string s : {"", "-S 0", "-S 512", "-S 4k", "-S 8k", "-S 64k", "-S 1M"}) {
    for (std::string fmt : {"raw", "qcow2"}) {
      SCOPED_TRACE(s + " -O " + fmt);
      std::string opts = fmt == "qcow2" ? " -o cluster_size=4k" : "";
      std::string mine = d.file("mine." + fmt), ref = d.file("ref." + fmt);
      std::string args = " " + s + " -f raw -O " + fmt + opts + " " + src + " ";
      ASSERT_EQ(img("convert" + args + mine).rc, 0);
      ASSERT_EQ(sh("qemu-img convert" + args + ref).rc, 0);
      EXPECT_EQ(map_of(mine, fmt), map_of(ref, fmt));
      EXPECT_EQ(sh("qemu-img compare -f raw -F " + fmt + " " + src + " " + mine).rc, 0);
    }
  }
}

// Read back by qemu-img convert, the target equals the source byte for byte, whatever the
// options that change how it is written.
TEST(ImgConvertOptions, EveryWriteModeReadsBackAsTheSource) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  std::string src = make_pattern_raw(d);
  for (std::string o : {"-W", "-m 1", "-m 16 -W", "-t none", "-t writethrough", "-t directsync",
                        "-t writeback", "-T none", "-C", "-C -W", "-c"}) {
    for (std::string fmt : {"raw", "qcow2"}) {
      if (o == "-c" && fmt == "raw") continue;
      SCOPED_TRACE(o + " -O " + fmt);
      std::string out = d.file("out." + fmt), back = d.file("back.raw");
      CmdResult r = img("convert " + o + " -f raw -O " + fmt + " " + src + " " + out);
      ASSERT_EQ(r.rc, 0) << r.err;
      ASSERT_EQ(sh("qemu-img convert -f " + fmt + " -O raw " + out + " " + back).rc, 0);
      EXPECT_EQ(sh("cmp " + src + " " + back).rc, 0);
      if (fmt == "qcow2") {
        EXPECT_EQ(sh("qemu-img check -q " + out).rc, 0);
      }
    }
  }
}

// Several sources are concatenated, as qemu-img concatenates them.
TEST(ImgConvertOptions, SeveralSourcesConcatenate) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 3M && qemu-io -c 'write -P 0x11 1M 64k' "
               "a.qcow2 >/dev/null && head -c 1000000 /dev/urandom > b.raw && "
               "qemu-img create -q -f qcow2 c.qcow2 1M && qemu-io -c 'write -P 0x33 0 4k' "
               "c.qcow2 >/dev/null",
               d.path())
                .rc,
            0);
  ASSERT_EQ(img("convert -O raw a.qcow2 b.raw c.qcow2 mine.raw", d.path()).rc, 0);
  ASSERT_EQ(sh("qemu-img convert -O raw a.qcow2 b.raw c.qcow2 ref.raw", d.path()).rc, 0);
  EXPECT_EQ(sh("cmp mine.raw ref.raw", d.path()).rc, 0);
  EXPECT_EQ(std::filesystem::file_size(d.file("mine.raw")),
            std::filesystem::file_size(d.file("ref.raw")));
  ASSERT_EQ(img("convert -O qcow2 a.qcow2 b.raw c.qcow2 mine.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare mine.qcow2 ref.raw", d.path()).rc, 0);
}

// -n writes into an existing image: zero ranges of the source are zeroed there (the old data
// goes), unless --target-is-zero says the target holds zeros already.
TEST(ImgConvertOptions, NoCreateOverwritesAndTargetIsZeroSkips) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 s.qcow2 4M && qemu-io -c 'write -P 0x22 1M 1M' "
               "s.qcow2 >/dev/null && qemu-img create -q -f qcow2 t.qcow2 4M && "
               "qemu-io -c 'write -P 0x77 0 4M' t.qcow2 >/dev/null && cp t.qcow2 t2.qcow2 && "
               "cp t.qcow2 t3.qcow2 && qemu-img create -q -f qcow2 z.qcow2 4M",
               d.path())
                .rc,
            0);
  ASSERT_EQ(img("convert -n -O qcow2 s.qcow2 t.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare s.qcow2 t.qcow2", d.path()).rc, 0);
  // A fresh target given as zero: only the data is written; the result is the source.
  ASSERT_EQ(img("convert -n --target-is-zero -O qcow2 s.qcow2 z.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare s.qcow2 z.qcow2", d.path()).rc, 0);
  // Told (wrongly) that the target is zero, both tools leave its old data outside the source's
  // data: the zero ranges are not written at all.
  ASSERT_EQ(sh("qemu-img convert -n --target-is-zero -O qcow2 s.qcow2 t2.qcow2", d.path()).rc, 0);
  ASSERT_EQ(img("convert -n --target-is-zero -O qcow2 s.qcow2 t3.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare t2.qcow2 t3.qcow2", d.path()).rc, 0);
  EXPECT_NE(sh("qemu-img compare s.qcow2 t3.qcow2", d.path()).rc, 0);
}

// -B: the target's backing file shows through where the source's top image holds nothing, as
// with qemu-img: the same map (depth, present, zero, data) and the same content.
TEST(ImgConvertOptions, BackingForTheTarget) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 base.qcow2 8M && qemu-io -c 'write -P 0x10 0 8M' "
               "base.qcow2 >/dev/null && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
               "top.qcow2 && qemu-io -c 'write -P 0x20 1M 1M' -c 'write -z 4M 1M' top.qcow2 "
               ">/dev/null",
               d.path())
                .rc,
            0);
  const std::string args = "convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 ";
  ASSERT_EQ(img(args + "mine.qcow2", d.path()).rc, 0);
  ASSERT_EQ(sh("qemu-img " + args + "ref.qcow2", d.path()).rc, 0);
  EXPECT_EQ(map_of(d.file("mine.qcow2"), "qcow2"), map_of(d.file("ref.qcow2"), "qcow2"));
  EXPECT_EQ(sh("qemu-img compare top.qcow2 mine.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img check -q mine.qcow2", d.path()).rc, 0);
  CmdResult info = sh("qemu-img info --output=json mine.qcow2", d.path());
  auto m = flat_json(info.out);
  EXPECT_EQ(m["backing-filename"], "\"base.qcow2\"");
  EXPECT_EQ(m["backing-filename-format"], "\"qcow2\"");
}

// An empty 1 PiB qcow2 converts (to qcow2: no host file system holds a 1 PiB raw file), and the
// target is as empty as a new image: nothing allocated past the metadata qemu-img create makes.
// (qemu-img map and qemu-img convert walk such an image in 512 MiB steps, tens of seconds on a
// loaded host, so this compares with a fresh image rather than with qemu-img's convert.)
TEST(ImgConvertOptions, EmptyPetabyteImage) {
  REQUIRE_QEMU_IMG();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 big.qcow2 1P && qemu-img create -q -f qcow2 "
               "fresh.qcow2 1P",
               d.path())
                .rc,
            0);
  CmdResult r = img("convert -O qcow2 big.qcow2 mine.qcow2", d.path());
  ASSERT_EQ(r.rc, 0) << r.err;
  CmdResult check = sh("qemu-img check --output=json mine.qcow2", d.path());
  EXPECT_EQ(check.rc, 0) << check.out;
  auto m = flat_json(check.out);
  auto fresh = flat_json(sh("qemu-img check --output=json fresh.qcow2", d.path()).out);
  EXPECT_EQ(m["check-errors"], "0");
  EXPECT_EQ(m.count("allocated-clusters"), 0u) << check.out;  // qemu-img omits it when 0
  EXPECT_EQ(m["image-end-offset"], fresh["image-end-offset"]);
  EXPECT_EQ(sh("qemu-img info --output=json mine.qcow2 | grep -q '\"virtual-size\": "
               "1125899906842624'",
               d.path())
                .rc,
            0);
}

}  // namespace
}  // namespace imgtest
