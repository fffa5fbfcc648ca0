// create_qcow2 (libimg/src/qcow2/create.cc) over a matrix of options; every image must pass
// `qemu-img check` and our own check_qcow2, and `qemu-img info` must agree on the options.

#include <gtest/gtest.h>

#include <cinttypes>

#include "img/file.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img {
namespace {

using test::json_field;
using test::run_tool;
using test::shell_quote;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kTiB = 1ull << 40;

const char* prealloc_name(Preallocation p) {
  switch (p) {
    case Preallocation::kOff: return "off";
    case Preallocation::kMetadata: return "metadata";
    case Preallocation::kFalloc: return "falloc";
    case Preallocation::kFull: return "full";
  }
  return "?";
}

std::string describe(const Qcow2CreateOptions& o) {
  return strfmt("version=%d cluster_size=%u refcount_bits=%u lazy=%d prealloc=%s size=%" PRIu64
                " compression=%s backing=%s",
                o.version, o.cluster_size, o.refcount_bits, o.lazy_refcounts,
                prealloc_name(o.preallocation), o.size, o.compression_type.c_str(),
                o.backing_file.c_str());
}

class CreateTest : public ::testing::Test {
 protected:
  // Creates the image with libimg and checks it with libimg, qemu-img check and qemu-img info.
  void create_and_verify(const Qcow2CreateOptions& o) {
    SCOPED_TRACE(describe(o));
    std::string path = dir_.file("img" + std::to_string(n_++) + ".qcow2");
    {
      auto f = open_host_file(*loop_, path, {.create = true, .truncate = true});
      ASSERT_OK(f);
      ASSERT_OK(loop_->run(create_qcow2(**f, o)));
      auto r = loop_->run(check_qcow2(**f, RepairMode::kNone));
      ASSERT_OK(r);
      EXPECT_EQ(r->corruptions, 0u);
      EXPECT_EQ(r->leaks, 0u);
      EXPECT_EQ(r->check_errors, 0u);
      for (const auto& m : r->messages) ADD_FAILURE() << m;
      EXPECT_EQ(r->total_clusters, (o.size + o.cluster_size - 1) / o.cluster_size);
      end_offset_ = r->image_end_offset;
      allocated_ = r->allocated_clusters;
      fragmented_ = r->fragmented_clusters;
      auto info = loop_->run(read_qcow2_info(**f));
      ASSERT_OK(info);
      EXPECT_EQ(info->version, o.version);
      EXPECT_EQ(info->cluster_size, o.cluster_size);
      EXPECT_EQ(info->refcount_bits, o.refcount_bits);
      EXPECT_EQ(info->lazy_refcounts, o.lazy_refcounts);
      EXPECT_EQ(info->virtual_size, (o.size + 511) / 512 * 512);
      EXPECT_EQ(info->backing_file, o.backing_file);
    }
    if (!test::have_tool("qemu-img")) return;  // the interop half needs qemu-utils
    auto check = run_tool("qemu-img check --output=json -f qcow2 " + shell_quote(path));
    EXPECT_EQ(check.exit_code, 0) << check.output;
    EXPECT_EQ(json_field(check.output, "check-errors"), "0") << check.output;
    EXPECT_EQ(json_field(check.output, "corruptions"), "") << check.output;
    EXPECT_EQ(json_field(check.output, "leaks"), "") << check.output;
    EXPECT_EQ(json_field(check.output, "image-end-offset"), std::to_string(end_offset_));
    EXPECT_EQ(test::json_count(check.output, "allocated-clusters"), allocated_);
    EXPECT_EQ(test::json_count(check.output, "fragmented-clusters"), fragmented_);
    auto info = run_tool("qemu-img info --output=json -f qcow2 " + shell_quote(path));
    ASSERT_EQ(info.exit_code, 0) << info.output;
    EXPECT_EQ(json_field(info.output, "virtual-size"), std::to_string((o.size + 511) / 512 * 512));
    EXPECT_EQ(json_field(info.output, "cluster-size"), std::to_string(o.cluster_size));
    EXPECT_EQ(json_field(info.output, "compat"), o.version == 2 ? "0.10" : "1.1");
    EXPECT_EQ(json_field(info.output, "refcount-bits"), std::to_string(o.refcount_bits));
    if (o.version == 3) {
      EXPECT_EQ(json_field(info.output, "lazy-refcounts"), o.lazy_refcounts ? "true" : "false");
      EXPECT_EQ(json_field(info.output, "compression-type"), o.compression_type);
    }
    if (!o.backing_file.empty()) {
      EXPECT_EQ(json_field(info.output, "backing-filename"), o.backing_file);
    }
    if (!o.backing_format.empty()) {
      EXPECT_EQ(json_field(info.output, "backing-filename-format"), o.backing_format);
    }
  }

  std::unique_ptr<IoLoop> loop_ = test::make_loop();
  test::TempDir dir_;
  int n_ = 0;
  uint64_t end_offset_ = 0, allocated_ = 0, fragmented_ = 0;
};

TEST_F(CreateTest, VersionsClusterSizesAndSizes) {
  for (int version : {2, 3}) {
    for (uint32_t cs : {512u, 4096u, 65536u, 2u << 20}) {
      for (uint64_t size : {uint64_t{0}, kMiB + 1, 64 * kTiB}) {
        // 64 TiB needs an L1 table over 32 MiB below 16 KiB clusters (tested below).
        if (size == 64 * kTiB && cs < 16384) continue;
        create_and_verify({.size = size, .version = version, .cluster_size = cs});
      }
    }
  }
}

TEST_F(CreateTest, RefcountWidths) {
  for (uint32_t bits : {1u, 2u, 4u, 8u, 16u, 32u, 64u}) {
    for (uint32_t cs : {512u, 65536u}) {
      for (auto p : {Preallocation::kOff, Preallocation::kMetadata}) {
        create_and_verify({.size = 3 * kMiB + 1, .cluster_size = cs, .refcount_bits = bits,
                           .preallocation = p});
      }
    }
  }
}

TEST_F(CreateTest, PreallocationModes) {
  for (auto p : {Preallocation::kMetadata, Preallocation::kFalloc, Preallocation::kFull}) {
    for (int version : {2, 3}) {
      for (uint32_t cs : {512u, 4096u, 65536u, 2u << 20}) {
        create_and_verify(
            {.size = kMiB + 1, .version = version, .cluster_size = cs, .preallocation = p});
      }
    }
  }
  // Metadata for a larger image: several L2 tables and refcount blocks with 512-byte clusters.
  create_and_verify({.size = 40 * kMiB, .cluster_size = 512, .refcount_bits = 64,
                     .preallocation = Preallocation::kMetadata});
}

TEST_F(CreateTest, FeaturesAndBacking) {
  create_and_verify({.size = 10 * kMiB, .lazy_refcounts = true});
  create_and_verify({.size = 10 * kMiB, .compression_type = "zstd"});
  // qemu-img opens the backing files (relative to the overlay's directory).
  if (test::have_tool("qemu-img")) {
    ASSERT_EQ(run_tool("qemu-img create -q -f raw " + shell_quote(dir_.file("base.raw")) + " 10M")
                  .exit_code,
              0);
    ASSERT_EQ(
        run_tool("qemu-img create -q -f qcow2 " + shell_quote(dir_.file("base.qcow2")) + " 10M")
            .exit_code,
        0);
  }
  create_and_verify({.size = 10 * kMiB, .backing_file = "base.raw", .backing_format = "raw"});
  create_and_verify(
      {.size = 10 * kMiB, .version = 2, .backing_file = "base.qcow2", .backing_format = "qcow2"});
}

TEST_F(CreateTest, FullPreallocationWritesData) {
  auto f = make_mem_file();
  ASSERT_OK(loop_->run(create_qcow2(
      *f, {.size = 4 * kMiB, .cluster_size = 65536, .preallocation = Preallocation::kFull})));
  EXPECT_GE(f->bytes().size(), 4 * kMiB);
}

void expect_invalid(IoLoop& loop, const Qcow2CreateOptions& o, const std::string& what) {
  auto f = make_mem_file();
  auto s = loop.run(create_qcow2(*f, o));
  ASSERT_FALSE(s.has_value()) << describe(o);
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.error().message().find(what), std::string::npos) << s.error().message();
}

TEST_F(CreateTest, RejectsBadOptions) {
  expect_invalid(*loop_, {.size = kMiB, .version = 4}, "compat");
  expect_invalid(*loop_, {.size = kMiB, .cluster_size = 256}, "cluster_size 256");
  expect_invalid(*loop_, {.size = kMiB, .cluster_size = 3 * 4096}, "cluster_size");
  expect_invalid(*loop_, {.size = kMiB, .cluster_size = 4u << 20}, "cluster_size");
  expect_invalid(*loop_, {.size = kMiB, .refcount_bits = 3}, "refcount_bits 3");
  expect_invalid(*loop_, {.size = kMiB, .refcount_bits = 128}, "refcount_bits 128");
  expect_invalid(*loop_, {.size = kMiB, .version = 2, .refcount_bits = 8}, "compat 1.1");
  expect_invalid(*loop_, {.size = kMiB, .version = 2, .lazy_refcounts = true}, "lazy_refcounts");
  expect_invalid(*loop_, {.size = kMiB, .compression_type = "lzo"}, "compression_type");
  expect_invalid(*loop_, {.size = kMiB, .version = 2, .compression_type = "zstd"}, "zstd");
  expect_invalid(*loop_, {.size = kMiB, .backing_file = std::string(1024, 'a')}, "backing file");
  expect_invalid(*loop_, {.size = kMiB, .backing_format = "raw"}, "backing_format");
  expect_invalid(*loop_,
                 {.size = kMiB, .preallocation = Preallocation::kMetadata, .backing_file = "b"},
                 "preallocation");
  // As QEMU: the L1 table would exceed 32 MiB.
  expect_invalid(*loop_, {.size = 64 * kTiB, .cluster_size = 512}, "too large");
  expect_invalid(*loop_, {.size = 64 * kTiB, .cluster_size = 4096}, "too large");
  expect_invalid(*loop_, {.size = (1ull << 56) + 1}, "2^56");
}

TEST_F(CreateTest, QemuAlsoRefusesTooLargeL1) {
  if (!test::have_tool("qemu-img")) GTEST_SKIP() << "qemu-img not installed (qemu-utils)";
  auto r = run_tool("qemu-img create -f qcow2 -o cluster_size=512 " +
                    shell_quote(dir_.file("big.qcow2")) + " 64T");
  EXPECT_NE(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace img
