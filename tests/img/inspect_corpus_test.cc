// The golden corpus: img info, check, map, measure, compare and dd side by side with qemu-img
// 7.2 on 32 images the test makes with qemu-img and qemu-io: plain, sparse, zero clusters (write
// -z), zlib and zstd compressed clusters, chains of depth 3 (over a raw base, and qcow2 only),
// cluster sizes from 512 bytes to 2 MiB, compat 0.10, extended L2, snapshots, lazy refcounts and
// refcount widths 1 and 64, every preallocation mode, external data files (plain and raw),
// bitmaps, a 1 TiB image, raw files with holes. Every output must equal qemu-img's byte for byte
// (stdout, exit code; errors without the program name), human and JSON; compare must agree on
// every ordered pair, in plain and strict mode.
#include <filesystem>
#include <string>
#include <vector>

#include "tool_test_util.h"

namespace imgtest {
namespace {

struct Corpus {
  TempDir dir;
  std::vector<std::string> images;  // names inside dir

  void make(const std::string& name, const std::string& script) {
    CmdResult r = sh(script, dir.path());
    ASSERT_EQ(r.rc, 0) << name << ": " << script << "\n" << r.out << r.err;
    images.push_back(name);
  }
};

// qemu-io commands on one image, quietly.
std::string io(const std::string& img, const std::vector<std::string>& cmds) {
  std::string s = "qemu-io";
  for (const auto& c : cmds) s += " -c '" + c + "'";
  return s + " " + img + " >/dev/null";
}

void build(Corpus& c) {
  c.make("plain.qcow2", "qemu-img create -q -f qcow2 plain.qcow2 4M && " +
                            io("plain.qcow2", {"write -P 1 0 256k", "write -P 2 1M 100k"}));
  c.make("empty.qcow2", "qemu-img create -q -f qcow2 empty.qcow2 3M");
  // Zero clusters: plain ones over unallocated space, unmapped ones over data (-u), and one over
  // data that keeps its cluster (ZERO_ALLOC, which map shows with its offset).
  c.make("zeros.qcow2",
         "qemu-img create -q -f qcow2 -o cluster_size=4k zeros.qcow2 2M && " +
             io("zeros.qcow2", {"write -P 7 0 64k", "write -z 1M 512k", "write -z -u 0 8k",
                                "write -P 8 1536k 4k", "write -z 16k 4k"}));
  c.make("zlib.qcow2", "qemu-img create -q -f qcow2 zlib.qcow2 2M && " +
                           io("zlib.qcow2", {"write -c -P 3 0 64k", "write -c -P 4 128k 64k",
                                             "write -P 5 64k 64k"}));
  c.make("zstd.qcow2",
         "qemu-img create -q -f qcow2 -o compression_type=zstd,cluster_size=16k zstd.qcow2 1M && " +
             io("zstd.qcow2", {"write -c -P 3 0 16k", "write -P 9 512k 48k"}));
  c.make("big.qcow2", "qemu-img create -q -f qcow2 -o cluster_size=2M big.qcow2 9M && " +
                          io("big.qcow2", {"write -P 6 3M 1k", "write -P 6 8M 1M"}));
  c.make("small.qcow2",
         "qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 small.qcow2 300k && " +
             io("small.qcow2", {"write -P 1 1k 3k", "write -P 2 200k 1k"}));
  // A chain of depth 3 over a raw base with a hole; the top is larger than its backing file.
  c.make("base.raw", "truncate -s 2M base.raw && " +
                         io("-f raw base.raw", {"write -P 1 0 64k", "write -P 2 1M 4k"}));
  c.make("mid.qcow2", "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 && " +
                          io("mid.qcow2", {"write -P 3 32k 64k", "write -z 1M 64k"}));
  c.make("top.qcow2", "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M && " +
                          io("top.qcow2", {"write -P 4 1536k 64k", "write -z 0 16k"}));
  // The same data as top.qcow2, flattened: identical contents, other allocation.
  c.make("flat.qcow2", "qemu-img convert -O qcow2 top.qcow2 flat.qcow2");
  c.make("flat.raw", "qemu-img convert -O raw top.qcow2 flat.raw");
  c.make("sparse.raw",
         "truncate -s 1M sparse.raw && printf hello | dd of=sparse.raw bs=1 seek=300000 "
         "conv=notrunc 2>/dev/null");
  c.make("odd.raw", "head -c 70000 /dev/urandom > odd.raw");
  // The rest of the create options and features (issue 8's golden corpus): extended L2,
  // snapshots (v3 and v2), lazy refcounts and other refcount widths, each preallocation mode,
  // external data files (plain and raw), bitmaps, a qcow2-only chain of depth 3, a 1 TiB image.
  c.make("ext.qcow2",
         "qemu-img create -q -f qcow2 -o extended_l2=on ext.qcow2 2M && " +
             io("ext.qcow2", {"write -P 1 3k 5k", "write -z 64k 4k", "write -P 2 1M 70k"}));
  c.make("ext_top.qcow2",
         "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k -b plain.qcow2 -F qcow2 "
         "ext_top.qcow2 && " +
             io("ext_top.qcow2", {"write -P 9 10k 2k", "write -z 1M 8k"}));
  c.make("snap.qcow2", "qemu-img create -q -f qcow2 snap.qcow2 2M && " +
                           io("snap.qcow2", {"write -P 1 0 128k"}) +
                           " && qemu-img snapshot -c first snap.qcow2 && " +
                           io("snap.qcow2", {"write -P 2 64k 128k"}) +
                           " && qemu-img snapshot -c second snap.qcow2");
  c.make("snap_v2.qcow2", "qemu-img create -q -f qcow2 -o compat=0.10 snap_v2.qcow2 1M && " +
                              io("snap_v2.qcow2", {"write -P 3 0 64k"}) +
                              " && qemu-img snapshot -c s snap_v2.qcow2 && " +
                              io("snap_v2.qcow2", {"write -P 4 0 4k"}));
  c.make("lazy.qcow2",
         "qemu-img create -q -f qcow2 -o lazy_refcounts=on,refcount_bits=1 "
         "lazy.qcow2 1M && " +
             io("lazy.qcow2", {"write -P 5 0 100k"}));
  c.make("rc64.qcow2",
         "qemu-img create -q -f qcow2 -o refcount_bits=64,cluster_size=4k "
         "rc64.qcow2 1M && " +
             io("rc64.qcow2", {"write -P 6 5k 20k", "write -z 512k 8k"}));
  c.make("pre_meta.qcow2",
         "qemu-img create -q -f qcow2 -o preallocation=metadata pre_meta.qcow2 "
         "4M && " +
             io("pre_meta.qcow2", {"write -P 7 0 100k", "write -P 8 2M 4k"}));
  c.make("pre_falloc.qcow2",
         "qemu-img create -q -f qcow2 -o preallocation=falloc "
         "pre_falloc.qcow2 2M && " +
             io("pre_falloc.qcow2", {"write -P 1 0 10k"}));
  c.make("pre_full.qcow2", "qemu-img create -q -f qcow2 -o preallocation=full pre_full.qcow2 1M");
  c.make("df.qcow2",
         "qemu-img create -q -f qcow2 -o data_file=df.raw df.qcow2 2M && " +
             io("df.qcow2", {"write -P 2 0 100k", "write -z 1M 64k", "write -P 3 1536k 4k"}));
  c.make("dfraw.qcow2",
         "qemu-img create -q -f qcow2 -o data_file=dfraw.raw,data_file_raw=on dfraw.qcow2 1M && " +
             io("dfraw.qcow2", {"write -P 4 4k 64k", "discard 512k 64k"}));
  c.make("bitmap.qcow2",
         "qemu-img create -q -f qcow2 bitmap.qcow2 4M && "
         "qemu-img bitmap --add bitmap.qcow2 b0 && "
         "qemu-img bitmap --add -g 4k --disable bitmap.qcow2 b1 && " +
             io("bitmap.qcow2", {"write -P 5 0 1M"}));
  c.make("zstd_ext.qcow2",
         "qemu-img create -q -f qcow2 -o compression_type=zstd,extended_l2=on,"
         "cluster_size=32k zstd_ext.qcow2 1M && " +
             io("zstd_ext.qcow2", {"write -c -P 6 0 32k", "write -P 7 40k 2k"}));
  c.make("c1.qcow2",
         "qemu-img create -q -f qcow2 c1.qcow2 2M && " + io("c1.qcow2", {"write -P 1 0 1M"}));
  c.make("c2.qcow2", "qemu-img create -q -f qcow2 -b c1.qcow2 -F qcow2 c2.qcow2 && " +
                         io("c2.qcow2", {"write -P 2 256k 256k", "write -z 768k 64k"}));
  c.make("c3.qcow2", "qemu-img create -q -f qcow2 -b c2.qcow2 -F qcow2 c3.qcow2 && " +
                         io("c3.qcow2", {"write -P 3 512k 4k", "discard 0 64k"}));
  c.make("huge.qcow2", "qemu-img create -q -f qcow2 huge.qcow2 1T && " +
                           io("huge.qcow2", {"write -P 1 1023G 64k"}));
}

class InspectCorpus : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_qemu_img() || !have_qemu_io()) return;
    corpus_ = new Corpus;
    build(*corpus_);
  }
  static void TearDownTestSuite() {
    delete corpus_;
    corpus_ = nullptr;
  }
  void SetUp() override {
    REQUIRE_QEMU_IMG();
    REQUIRE_QEMU_IO();
    ASSERT_NE(corpus_, nullptr);
    ASSERT_FALSE(HasFatalFailure());
  }
  // Runs "qemu-img ARGS" and "img ARGS" in the corpus folder; their stdout, exit code and
  // stderr (without the program name) must be equal. Returns qemu-img's result.
  static CmdResult expect_same(const std::string& args) {
    CmdResult q = sh("qemu-img " + args, corpus_->dir.path());
    CmdResult m = img(args, corpus_->dir.path());
    EXPECT_EQ(m.out, q.out) << "img " << args;
    EXPECT_EQ(m.rc, q.rc) << "img " << args << "\n" << m.err;
    EXPECT_EQ(unprefixed(m.err, "img"), unprefixed(q.err, "qemu-img")) << "img " << args;
    return q;
  }
  static Corpus* corpus_;
};
Corpus* InspectCorpus::corpus_ = nullptr;

TEST_F(InspectCorpus, InfoAndCheckPrintWhatQemuImgPrints) {
  for (const std::string& f : corpus_->images) {
    expect_same("info " + f);
    expect_same("info --output=json " + f);
    expect_same("info --backing-chain --output=json " + f);
    if (f.ends_with(".qcow2")) {
      expect_same("check " + f);
      expect_same("check --output=json " + f);
    }
  }
  EXPECT_GE(corpus_->images.size(), 30u);
}

TEST_F(InspectCorpus, MapPrintsWhatQemuImgPrints) {
  int compared = 0;
  for (const std::string& f : corpus_->images) {
    expect_same("map " + f);
    CmdResult q = expect_same("map --output=json " + f);
    EXPECT_EQ(q.rc, 0) << q.err;
    expect_same("map --output=json --start-offset 40k --max-length 1000000 " + f);
    expect_same("map --start-offset 12345 --max-length 1M " + f);
    ++compared;
  }
  EXPECT_GE(compared, 30);
  // The chain's map shows every depth and the raw base's hole.
  CmdResult chain = expect_same("map --output=json top.qcow2");
  EXPECT_NE(chain.out.find("\"depth\": 2, \"present\": true, \"zero\": true"), std::string::npos)
      << chain.out;
  expect_same("map -f raw top.qcow2");
}

// Zero clusters that keep their host cluster (ZERO_ALLOC; with extended L2 also unallocated
// subclusters of an allocated cluster, UNALLOCATED_ALLOC) print with their offset, as qemu-img's.
TEST_F(InspectCorpus, MapShowsTheOffsetOfZerosThatKeepAHostCluster) {
  CmdResult q = expect_same("map --output=json zeros.qcow2");
  EXPECT_NE(q.out.find("\"zero\": true, \"data\": false, \"offset\""), std::string::npos) << q.out;
  q = expect_same("map --output=json ext.qcow2");
  EXPECT_NE(q.out.find("\"present\": false, \"zero\": true, \"data\": false, \"offset\""),
            std::string::npos)
      << q.out;
}

TEST_F(InspectCorpus, MapRefusesBadInputAsQemuImgDoes) {
  expect_same("map --output=xml plain.qcow2");
  expect_same("map --start-offset -1 plain.qcow2");
  expect_same("map --max-length 1x plain.qcow2");
  expect_same("map --max-length 9E plain.qcow2");
  expect_same("map --start-offset 9M --output=json plain.qcow2");
  // qemu-img says "Image is not in qcow2 format"; img names the bad magic instead.
  CmdResult wrong = img("map -f qcow2 sparse.raw", corpus_->dir.path());
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.err.find("Could not open 'sparse.raw': "), std::string::npos) << wrong.err;
  EXPECT_EQ(img("map nope.qcow2", corpus_->dir.path()).rc, 1);
  CmdResult two = img("map plain.qcow2 empty.qcow2", corpus_->dir.path());
  EXPECT_EQ(two.rc, 1);
  EXPECT_NE(two.err.find("Expecting one image file name"), std::string::npos) << two.err;
}

TEST_F(InspectCorpus, MeasurePrintsQemuImgsNumbers) {
  const std::vector<std::string> opts = {
      "-O raw",
      "-O qcow2",
      "-O qcow2 -o cluster_size=4k",
      "-O qcow2 -o cluster_size=2M,refcount_bits=1",
      "-O qcow2 -o compat=0.10",
      "-O qcow2 -o refcount_bits=64,cluster_size=512",
      "-O qcow2 -o extended_l2=on,cluster_size=32k",
      "-O qcow2 -o preallocation=metadata",
      "-O qcow2 -o preallocation=full",
      "-O qcow2 -o backing_file=x.qcow2",
  };
  for (const std::string& o : opts) {
    for (const std::string& f : corpus_->images) {
      expect_same("measure " + o + " " + f);
      expect_same("measure --output=json " + o + " " + f);
    }
    for (const char* size : {"0", "1", "1G", "100G", "3T", "1.5E"}) {
      expect_same("measure " + o + " --size " + size);
      expect_same("measure --output=json " + o + " --size " + size);
    }
  }
  expect_same("measure -O qcow2 -f raw zlib.qcow2");
}

TEST_F(InspectCorpus, MeasureRefusesBadInputAsQemuImgDoes) {
  for (const char* args :
       {"-O qcow2", "-O qcow2 --size 1G plain.qcow2", "-O qcow2 --size 1x",
        "-O qcow2 -o bogus=1 --size 1G", "-O raw -o cluster_size=4k --size 1G",
        "-O qcow2 -o cluster_size=3000 --size 1G",
        "-O qcow2 -o cluster_size=8k,extended_l2=on --size 1G",
        "-O qcow2 -o compat=0.10,refcount_bits=8 --size 1G", "-O qcow2 -o compat=9 --size 1G",
        "-O qcow2 -o preallocation=bad --size 1G", "-O qcow2 -o cluster_size=512 --size 8E",
        "-f raw --size 1G"}) {
    CmdResult q = expect_same(std::string("measure ") + args);
    EXPECT_EQ(q.rc, 1) << args;
  }
}

// Every ordered pair, plain and strict: exit code and message as qemu-img's.
TEST_F(InspectCorpus, CompareAgreesWithQemuImgOnEveryPair) {
  int identical = 0, different = 0;
  for (const std::string& a : corpus_->images) {
    for (const std::string& b : corpus_->images) {
      CmdResult q = expect_same("compare " + a + " " + b);
      (q.rc == 0 ? identical : different)++;
      expect_same("compare -s " + a + " " + b);
    }
  }
  // The corpus holds equal contents in different layouts (top, flat.qcow2, flat.raw).
  EXPECT_GE(identical, 14 + 6);
  EXPECT_GT(different, 100);
  expect_same("compare -q top.qcow2 plain.qcow2");
  expect_same("compare -f raw -F raw top.qcow2 top.qcow2");
  expect_same("compare -f raw top.qcow2 flat.raw");
}

TEST_F(InspectCorpus, CompareExitCodes) {
  EXPECT_EQ(img("compare nope.qcow2 plain.qcow2", corpus_->dir.path()).rc, 2);
  EXPECT_EQ(img("compare plain.qcow2 nope.qcow2", corpus_->dir.path()).rc, 2);
  EXPECT_EQ(img("compare -f qcow2 sparse.raw plain.qcow2", corpus_->dir.path()).rc, 2);
  CmdResult one = img("compare plain.qcow2", corpus_->dir.path());
  EXPECT_EQ(one.rc, 1);
  EXPECT_NE(one.err.find("Expecting two image file names"), std::string::npos) << one.err;
}

// dd side by side: the same output size and contents (qemu-img compare -s, so allocation too)
// for each operand mix, and the same refusals.
TEST_F(InspectCorpus, DdMakesWhatQemuImgDdMakes) {
  const std::string dir = corpus_->dir.path();
  int n = 0;
  for (const char* ops :
       {"bs=64k count=2 skip=1 if=top.qcow2", "-O qcow2 bs=1M skip=1 if=top.qcow2",
        "bs=4k if=odd.raw", "-f raw bs=1M count=1 if=zlib.qcow2", "skip=100000 if=plain.qcow2",
        "-O qcow2 bs=1000 skip=3 count=7 if=sparse.raw"}) {
    std::string q = "q" + std::to_string(n) + ".out", m = "m" + std::to_string(n) + ".out";
    ++n;
    CmdResult qr = sh(std::string("qemu-img dd ") + ops + " of=" + q, dir);
    CmdResult mr = img(std::string("dd ") + ops + " of=" + m, dir);
    EXPECT_EQ(mr.rc, qr.rc) << ops << "\n" << mr.err;
    EXPECT_EQ(unprefixed(mr.err, "img"), unprefixed(qr.err, "qemu-img")) << ops;
    EXPECT_EQ(std::filesystem::file_size(dir + "/" + m), std::filesystem::file_size(dir + "/" + q))
        << ops;
    CmdResult cmp = sh("qemu-img compare -s " + q + " " + m, dir);
    EXPECT_EQ(cmp.rc, 0) << ops << "\n" << cmp.out;
  }
  for (const char* ops :
       {"if=top.qcow2", "if=top.qcow2 of=x bs=0", "if=top.qcow2 of=x bogus=1",
        "if=top.qcow2 of=x foo", "if=top.qcow2 of=x count=-1", "if=top.qcow2 of=/nonexistent/x"}) {
    CmdResult qr = sh(std::string("qemu-img dd ") + ops, dir);
    CmdResult mr = img(std::string("dd ") + ops, dir);
    EXPECT_EQ(mr.rc, 1) << ops;
    EXPECT_EQ(mr.rc, qr.rc) << ops;
    EXPECT_EQ(unprefixed(mr.err, "img"), unprefixed(qr.err, "qemu-img")) << ops;
  }
}

// Errors carry the name img runs as, like qemu-img's.
TEST(ImgProgramName, ErrorsStartWithTheInvokedName) {
  TempDir d;
  std::string link = d.file("qemu-img");
  ASSERT_EQ(sh("ln -s '" + kImg + "' '" + link + "'").rc, 0);
  CmdResult r = sh("'" + link + "' map nope.qcow2", d.path());
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "qemu-img: Could not open 'nope.qcow2': No such file or directory\n");
  CmdResult plain = img("map nope.qcow2", d.path());
  EXPECT_EQ(plain.err, "img: Could not open 'nope.qcow2': No such file or directory\n");
}

}  // namespace
}  // namespace imgtest
