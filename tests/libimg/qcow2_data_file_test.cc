// External data files (qcow2.rst "External data file"; data_file and data_file_raw), both ways
// against QEMU 7.2: images qemu-img and qemu-io made read back bit for bit and map alike (the
// first cluster at data file offset 0 included); what libimg writes qemu-img reads and checks
// clean, with the data at its guest offset in the data file; a raw data file reads as the disk
// after writes, zero writes and discards; resize takes the data file along; what cannot work
// with a data file (compression, internal snapshots) is refused in qemu's terms; and a missing
// data file, a missing name, the image itself as its data file and the refusing open policy
// each give a clear error.
#include <sys/stat.h>

#include <fstream>
#include <random>

#include "chain_interop.h"
#include "img/bytes.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "img/snapshot.h"
#include "qcow2_workload.h"

namespace img {
namespace {

constexpr uint64_t kK = 1024, kM = 1024 * 1024;

class DataFile : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }
  // Absolute names: QEMU (and libimg, as QEMU) opens a relative data file name from the working
  // directory.
  std::string f(const std::string& n) const { return dir_.file(n); }

  // qemu-img check --output=json's counts.
  struct Counts {
    uint64_t allocated = 0, corruptions = 0, leaks = 0;
  };
  Counts qemu_check(const std::string& path) {
    test::ToolResult r = test::run_tool("qemu-img check --output=json " + test::shell_quote(path));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return {test::json_count(r.output, "allocated-clusters"),
            test::json_count(r.output, "corruptions"), test::json_count(r.output, "leaks")};
  }
  CheckResult libimg_check(const std::string& path) {
    auto file = open_host_file(*loop_, path, {.read_only = true});
    EXPECT_TRUE(file.has_value());
    auto r = loop_->run(check_qcow2(**file, RepairMode::kNone));
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? *r : CheckResult{};
  }
  std::unique_ptr<BlockDriver> open_rw(const std::string& path) {
    auto d = loop_->run(open_image(*loop_, path, {}));
    EXPECT_TRUE(d.has_value()) << d.error().to_string();
    return d ? std::move(*d) : nullptr;
  }
  void create(const std::string& name, uint64_t size, Qcow2CreateOptions o) {
    ASSERT_OK(loop_->run(create_image(*loop_, f(name), "qcow2", size, o)));
  }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_F(DataFile, QemuMadeImagesReadBitForBitAndMapAlike) {
  for (const char* opts : {"", ",extended_l2=on", ",cluster_size=4096"}) {
    SCOPED_TRACE(opts);
    std::filesystem::remove(f("q.raw"));
    test::qemu_ok("qemu-img create -q -f qcow2 -o data_file=" + f("q.raw") + opts + " " +
                  f("q.qcow2") + " 4M");
    std::mt19937_64 rng(7);
    // Guest cluster 0 written: its entry has offset 0 with COPIED set.
    std::vector<std::string> ops{"write -P 0x5a 0 3k"};
    for (auto& op : test::random_qemu_io_ops(rng, 4 * kM, 64 * kK, 1, 40)) ops.push_back(op);
    test::qemu_io("qcow2", f("q.qcow2"), ops);
    auto want = test::qemu_flat(f("q.qcow2"), f("flat.raw"));
    EXPECT_SAME_BYTES(test::libimg_flat(*loop_, f("q.qcow2")), want, "libimg vs qemu-img");
    test::expect_map_agrees_with_qemu(*loop_, f("q.qcow2"));
    // check counts what qemu-img counts: the cluster at offset 0 is allocated, and nothing in
    // the data file is refcounted.
    Counts q = qemu_check(f("q.qcow2"));
    CheckResult c = libimg_check(f("q.qcow2"));
    EXPECT_EQ(c.allocated_clusters, q.allocated);
    EXPECT_EQ(c.corruptions, 0u);
    EXPECT_EQ(c.leaks, 0u);
  }
}

TEST_F(DataFile, WhatLibimgWritesQemuReadsWithTheDataAtItsGuestOffset) {
  create("l.qcow2", 8 * kM, {.data_file = f("l.raw")});
  // qemu-img create's layout: the data file is the virtual size, the image holds only metadata.
  EXPECT_EQ(std::filesystem::file_size(f("l.raw")), 8 * kM);
  auto d = open_rw(f("l.qcow2"));
  ASSERT_TRUE(d);
  std::vector<uint8_t> model(8 * kM, 0);
  for (const test::WorkOp& op : test::make_workload(11, 8 * kM, 120, 200 * kK)) {
    Status st = loop_->run(test::run_op(*d, op));
    ASSERT_TRUE(st.has_value()) << test::describe(op) << ": " << st.error().to_string();
    test::apply_to_model(model, op, 64 * kK);
  }
  std::vector<uint8_t> head(3000);
  test::fill_pattern(head.data(), 0, head.size(), 99);
  ASSERT_OK(loop_->run(d->write(0, head.data(), head.size())));
  std::copy(head.begin(), head.end(), model.begin());
  ASSERT_OK(loop_->run(d->close()));
  d.reset();
  test::expect_qemu_check_clean(f("l.qcow2"));
  EXPECT_SAME_BYTES(test::qemu_flat(f("l.qcow2"), f("flat.raw")), model, "qemu-img vs model");
  // Guest offset 0 lies at data file offset 0.
  auto raw = test::read_host_file(f("l.raw"));
  ASSERT_GE(raw.size(), head.size());
  EXPECT_TRUE(std::equal(head.begin(), head.end(), raw.begin()));
  // The qcow2 file holds no guest data: it is as small as the metadata.
  EXPECT_LT(std::filesystem::file_size(f("l.qcow2")), 1 * kM);
  test::expect_map_agrees_with_qemu(*loop_, f("l.qcow2"));
}

TEST_F(DataFile, ARawDataFileReadsAsTheDisk) {
  create("r.qcow2", 4 * kM + 512, {.data_file = f("r.raw"), .data_file_raw = true});
  {
    // Every cluster is mapped at create (metadata preallocation), as qemu-img makes it.
    auto st = loop_->run(open_image(*loop_, f("r.qcow2"), {.read_only = true}));
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    auto bs = loop_->run((*st)->block_status(0, (*st)->size()));
    ASSERT_TRUE(bs.has_value());
    EXPECT_EQ(bs->kind, BlockStatus::Kind::kData);
    EXPECT_EQ(bs->length, 4 * kM + 512);
    EXPECT_EQ(bs->host_offset, 0u);
  }
  auto d = open_rw(f("r.qcow2"));
  ASSERT_TRUE(d);
  std::vector<uint8_t> model(d->size(), 0);
  for (const test::WorkOp& op : test::make_workload(5, d->size(), 150, 150 * kK)) {
    Status st = loop_->run(test::run_op(*d, op));
    ASSERT_TRUE(st.has_value()) << test::describe(op) << ": " << st.error().to_string();
    test::apply_to_model(model, op, 64 * kK);
  }
  ASSERT_OK(loop_->run(d->close()));
  d.reset();
  auto raw = test::read_host_file(f("r.raw"));
  raw.resize(model.size(), 0);
  EXPECT_SAME_BYTES(raw, model, "raw data file vs the disk");
  test::expect_qemu_check_clean(f("r.qcow2"));
  EXPECT_SAME_BYTES(test::qemu_flat(f("r.qcow2"), f("flat.raw")), model, "qemu-img vs model");
  test::ToolResult cmp =
      test::run_tool("qemu-img compare -f raw -F qcow2 " + f("r.raw") + " " + f("r.qcow2"));
  EXPECT_EQ(cmp.exit_code, 0) << cmp.output;
}

TEST_F(DataFile, QemuIoOnALibimgImageAndBackAgree) {
  create("b.qcow2", 2 * kM, {.extended_l2 = true, .data_file = f("b.raw")});
  std::mt19937_64 rng(3);
  test::qemu_io("qcow2", f("b.qcow2"), test::random_qemu_io_ops(rng, 2 * kM, 64 * kK, 9, 30));
  auto d = open_rw(f("b.qcow2"));
  ASSERT_TRUE(d);
  std::vector<uint8_t> buf(70 * kK, 0xc3);
  ASSERT_OK(loop_->run(d->write(33 * kK, buf.data(), buf.size())));
  ASSERT_OK(loop_->run(d->write_zeroes(200 * kK, 100 * kK, {.may_unmap = true})));
  ASSERT_OK(loop_->run(d->close()));
  d.reset();
  test::expect_qemu_check_clean(f("b.qcow2"));
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, f("b.qcow2")),
                    test::qemu_flat(f("b.qcow2"), f("flat.raw")), "libimg vs qemu-img");
}

TEST_F(DataFile, ResizeTakesTheDataFileAlong) {
  create("z.qcow2", 1 * kM, {.data_file = f("z.raw")});
  create("zr.qcow2", 1 * kM, {.data_file = f("zr.raw"), .data_file_raw = true});
  for (const char* name : {"z", "zr"}) {
    SCOPED_TRACE(name);
    const std::string img = f(std::string(name) + ".qcow2");
    const std::string raw = f(std::string(name) + ".raw");
    auto d = open_rw(img);
    ASSERT_TRUE(d);
    std::vector<uint8_t> buf(64 * kK, 0x77);
    ASSERT_OK(loop_->run(d->write(960 * kK, buf.data(), buf.size())));
    ASSERT_OK(loop_->run(d->resize(3 * kM, {})));
    EXPECT_EQ(std::filesystem::file_size(raw), 3 * kM);
    ASSERT_OK(loop_->run(d->close()));
    d.reset();
    test::expect_qemu_check_clean(img);
    // A raw data file stays fully mapped, as qemu-img resize leaves it.
    auto map = test::parse_qemu_map(test::qemu_ok("qemu-img map --output=json " + img));
    ASSERT_FALSE(map.empty());
    if (std::string(name) == "zr") {
      EXPECT_EQ(map.size(), 1u);
      EXPECT_TRUE(map[0].data);
    }
    d = open_rw(img);
    ASSERT_TRUE(d);
    ASSERT_OK(loop_->run(d->resize(512 * kK, {.allow_shrink = true})));
    ASSERT_OK(loop_->run(d->close()));
    d.reset();
    EXPECT_EQ(std::filesystem::file_size(raw), 512 * kK);
    test::expect_qemu_check_clean(img);
  }
}

TEST_F(DataFile, CompressionAndInternalSnapshotsAreRefused) {
  create("c.qcow2", 1 * kM, {.data_file = f("c.raw")});
  auto d = open_rw(f("c.qcow2"));
  ASSERT_TRUE(d);
  std::vector<uint8_t> buf(64 * kK, 1);
  auto w = loop_->run(d->write_compressed(0, buf.data(), buf.size()));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), ErrorCode::kNotSupported);
  EXPECT_EQ(w.error().sys_errno(), ENOTSUP);  // qemu-img: "Operation not supported"
  EXPECT_NE(w.error().message().find("external data file"), std::string::npos);
  auto sn = loop_->run(create_snapshot(*d, {.name = "s1"}));
  ASSERT_FALSE(sn.has_value());
  EXPECT_EQ(sn.error().code(), ErrorCode::kNotSupported);
  ASSERT_OK(loop_->run(d->close()));
  d.reset();
  test::expect_qemu_check_clean(f("c.qcow2"));
  // qemu-img refuses the same.
  test::ToolResult r = test::run_tool("qemu-img snapshot -c s1 " + f("c.qcow2"));
  EXPECT_NE(r.exit_code, 0);
}

TEST_F(DataFile, ACompressedEntryInADataFileImageIsACorruption) {
  create("h.qcow2", 1 * kM, {.data_file = f("h.raw")});
  test::qemu_io("qcow2", f("h.qcow2"), {"write -P 1 0 64k"});
  // Guest cluster 0's entry becomes a compressed descriptor (bit 62).
  auto b = test::read_host_file(f("h.qcow2"));
  uint64_t l2 = load_be64(&b[load_be64(&b[40])]) & 0x00fffffffffffe00ull;
  {
    std::fstream io(f("h.qcow2"), std::ios::in | std::ios::out | std::ios::binary);
    uint8_t e[8];
    store_be64(e, (1ull << 62) | 0x30000);
    io.seekp(static_cast<std::streamoff>(l2));
    io.write(reinterpret_cast<const char*>(e), 8);
  }
  auto d = loop_->run(open_image(*loop_, f("h.qcow2"), {.read_only = true}));
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  std::vector<uint8_t> buf(4096);
  auto r = loop_->run((*d)->read(0, buf.data(), buf.size()));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(r.error().message().find("compressed cluster in an image with an external data file"),
            std::string::npos)
      << r.error().message();
  EXPECT_GT(libimg_check(f("h.qcow2")).corruptions, 0u);
}

TEST_F(DataFile, OpenErrorsNameTheProblem) {
  create("m.qcow2", 1 * kM, {.data_file = f("m.raw")});
  // The refusing policy (images from strangers) opens no file the image names.
  auto refused = loop_->run(
      open_image(*loop_, f("m.qcow2"), {.read_only = true, .backing = BackingPolicy::kRefuse}));
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("external data file"), std::string::npos);
  // A missing data file, in qemu's words.
  std::filesystem::remove(f("m.raw"));
  auto missing = loop_->run(open_image(*loop_, f("m.qcow2"), {.read_only = true}));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().message(),
            "Could not open '" + f("m.raw") + "': No such file or directory");
  // The image itself as its data file (named by amend, as a hostile image could): guest writes
  // would overwrite its metadata.
  create("self.qcow2", 1 * kM, {.data_file = f("x.raw")});
  auto amend = [&](const std::string& img, const std::string& name) {
    auto drv = loop_->run(open_image(*loop_, img, {}));
    ASSERT_TRUE(drv.has_value()) << drv.error().to_string();
    ASSERT_OK(loop_->run(amend_image(**drv, {.data_file = name}, {})));
    ASSERT_OK(loop_->run((*drv)->close()));
  };
  amend(f("self.qcow2"), f("self.qcow2"));
  auto self = loop_->run(open_image(*loop_, f("self.qcow2"), {}));
  ASSERT_FALSE(self.has_value());
  EXPECT_NE(self.error().message().find("is the image itself"), std::string::npos)
      << self.error().message();
  // The feature bit without the extension that names the file (amend data_file= drops it, as
  // qemu-img's does): the data is nowhere.
  create("n.qcow2", 1 * kM, {.data_file = f("n.raw")});
  amend(f("n.qcow2"), "");
  auto nameless = loop_->run(open_image(*loop_, f("n.qcow2"), {.read_only = true}));
  ASSERT_FALSE(nameless.has_value());
  EXPECT_NE(nameless.error().message().find("'data-file' is required for this image"),
            std::string::npos)
      << nameless.error().message();
  // qemu-io says the same (qemu-img info, which does no I/O, shows such an image).
  test::ToolResult q = test::run_tool("qemu-io -r -c 'read 0 512' " + f("n.qcow2"));
  EXPECT_NE(q.exit_code, 0) << q.output;
  EXPECT_NE(q.output.find("'data-file' is required for this image"), std::string::npos) << q.output;
}

}  // namespace
}  // namespace img
