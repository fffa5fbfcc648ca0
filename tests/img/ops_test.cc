// ops layer unit tests: size strings, -o parsing, and convert between in-memory images.
#include "img/ops.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"

namespace img {
namespace {

TEST(ParseSize, QemuSuffixes) {
  EXPECT_EQ(parse_size("512").value(), 512u);
  EXPECT_EQ(parse_size("1k").value(), 1024u);
  EXPECT_EQ(parse_size("1K").value(), 1024u);
  EXPECT_EQ(parse_size("2M").value(), 2u << 20);
  EXPECT_EQ(parse_size("1.5G").value(), 3ull << 29);
  EXPECT_EQ(parse_size("1T").value(), 1ull << 40);
  EXPECT_EQ(parse_size("1P").value(), 1ull << 50);
  EXPECT_EQ(parse_size("7E").value(), 7ull << 60);
  EXPECT_EQ(parse_size("10b").value(), 10u);
  EXPECT_EQ(parse_size("0x10").value(), 16u);
  EXPECT_EQ(parse_size("3.k").value(), 3072u);
  EXPECT_EQ(parse_size("1.0001k").value(), 1024u);
}

// Regression: a leading zero made strtoull read octal ("010k" was 8 KiB, "08k" an error); qemu-img
// 7.2 creates 10240- and 8192-byte images from them (ImgCreate.LeadingZeroSizesMatchQemuImg).
TEST(ParseSize, LeadingZeroIsDecimal) {
  EXPECT_EQ(parse_size("010k").value(), 10240u);
  EXPECT_EQ(parse_size("08k").value(), 8192u);
  EXPECT_EQ(parse_size("0010").value(), 10u);
  EXPECT_EQ(parse_size("0x10k").value(), 16384u);  // hex with a suffix: qemu warns, accepts
  EXPECT_FALSE(parse_size("00x10").has_value());
  EXPECT_FALSE(parse_size("0x").has_value());
}

// Regression: the text is a string_view; a NUL inside it ended the number early ("1\0x" was 1).
TEST(ParseSize, EmbeddedNulIsGarbage) {
  EXPECT_FALSE(parse_size(std::string_view("1\0x", 3)).has_value());
  EXPECT_FALSE(parse_size(std::string_view("4k\0", 3)).has_value());
}

TEST(ParseSize, RejectsGarbage) {
  for (const char* bad : {"", "abc", "12Q", "-5", "1.5", "0.5b", "1k5", ".5k", "5kB", "1e3", "8E",
                          "16E", "0x1.5k", "99999999999999999999"}) {
    EXPECT_FALSE(parse_size(bad).has_value()) << bad;
  }
}

// Regression (img_options_fuzz): to_create_options read size and cluster_size with std::stoull,
// which throws on a value parse_create_options did not normalize (a list a caller filled in).
TEST(CreateOptions, HandMadeListWithBadValuesIsAnErrorNotAnException) {
  CreateOptionList list;
  list.items = {{"size", "abc"}};
  auto o = to_create_options("qcow2", list);
  ASSERT_FALSE(o.has_value());
  EXPECT_NE(o.error().message().find("invalid size 'abc'"), std::string::npos);
  list.items = {{"cluster_size", "1x"}};
  o = to_create_options("qcow2", list);
  ASSERT_FALSE(o.has_value());
  EXPECT_NE(o.error().message().find("Parameter 'cluster_size' does not accept value '1x'"),
            std::string::npos);
  list.items = {{"size", "64k"}, {"cluster_size", "4k"}};  // sizes as a person writes them
  o = to_create_options("qcow2", list);
  ASSERT_TRUE(o.has_value()) << o.error().to_string();
  EXPECT_EQ(o->size, 65536u);
  EXPECT_EQ(o->cluster_size, 4096u);
}

TEST(CreateOptions, ParsesQemuNames) {
  auto list = parse_create_options(
      "qcow2", {"compat=0.10,cluster_size=4k", "refcount_bits=16,preallocation=metadata"});
  ASSERT_TRUE(list.has_value());
  auto o = to_create_options("qcow2", *list);
  ASSERT_TRUE(o.has_value()) << o.error().to_string();
  EXPECT_EQ(o->version, 2);
  EXPECT_EQ(o->cluster_size, 4096u);
  EXPECT_EQ(o->preallocation, Preallocation::kMetadata);

  list = parse_create_options("qcow2", {"compat=v3,lazy_refcounts=on,compression_type=zstd,"
                                        "backing_file=a,,b.qcow2,backing_fmt=qcow2"});
  ASSERT_TRUE(list.has_value());
  o = to_create_options("qcow2", *list);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->version, 3);
  EXPECT_TRUE(o->lazy_refcounts);
  EXPECT_EQ(o->compression_type, "zstd");
  EXPECT_EQ(o->backing_file, "a,b.qcow2");
  EXPECT_EQ(o->backing_format, "qcow2");
  // qemu-img 7.2 prints compat= before backing_file= whatever the order given.
  EXPECT_EQ(describe_create_options("qcow2", *list, 1024),
            "cluster_size=65536 extended_l2=off compression_type=zstd size=1024 "
            "compat=v3 backing_file=a,b.qcow2 backing_fmt=qcow2 lazy_refcounts=on "
            "refcount_bits=16");
}

TEST(CreateOptions, RejectsWhatQemuRejects) {
  EXPECT_FALSE(parse_create_options("qcow2", {"bogus=1"}).has_value());
  EXPECT_FALSE(parse_create_options("raw", {"cluster_size=4k"}).has_value());
  EXPECT_FALSE(parse_create_options("qcow2", {"cluster_size=x"}).has_value());
  // A bool that is neither on nor off, while parsing (qemu-img says so before "Formatting").
  EXPECT_FALSE(parse_create_options("qcow2", {"lazy_refcounts=maybe"}).has_value());
  EXPECT_FALSE(parse_create_options("qcow2", {"data_file_raw=1"}).has_value());
  for (const char* bad :
       {"compat=1.2", "cluster_size=3000", "cluster_size=4M", "refcount_bits=3", "data_file_raw=on",
        "compat=0.10,data_file=d.raw", "preallocation=xx", "compression_type=lz4",
        "compat=0.10,lazy_refcounts=on", "compat=0.10,refcount_bits=8", "backing_fmt=raw"}) {
    auto list = parse_create_options("qcow2", {bad});
    ASSERT_TRUE(list.has_value()) << bad;
    EXPECT_FALSE(to_create_options("qcow2", *list).has_value()) << bad;
  }
  auto raw = parse_create_options("raw", {"preallocation=metadata"});
  ASSERT_TRUE(raw.has_value());
  EXPECT_FALSE(to_create_options("raw", *raw).has_value());
}

TEST(CreateOptions, Help) {
  EXPECT_TRUE(parse_create_options("qcow2", {"help"})->help);
  EXPECT_NE(create_options_help("qcow2").find("compat=<str>"), std::string::npos);
}

TEST(IsZero, Edges) {
  std::vector<uint8_t> b(8192, 0);
  EXPECT_TRUE(is_zero(b.data(), b.size()));
  EXPECT_TRUE(is_zero(b.data(), 0));
  for (size_t pos : {0ul, 15ul, 16ul, 4095ul, 8191ul}) {
    b[pos] = 1;
    EXPECT_FALSE(is_zero(b.data(), b.size())) << pos;
    b[pos] = 0;
  }
}

// Convert between raw drivers on memory files: data arrives, zeros are not written.
TEST(OpsConvert, MemoryRawToRaw) {
  auto loop = IoLoop::create().value();
  constexpr uint64_t kSize = 8 << 20;
  auto src_file = make_mem_file(loop.get());
  std::vector<uint8_t> data(kSize, 0);
  for (uint64_t i = 3 << 20; i < (3 << 20) + 70000; ++i) data[i] = static_cast<uint8_t>(i * 7);
  data[kSize - 1] = 9;
  ASSERT_TRUE(loop->run(src_file->write(0, data.data(), kSize)).has_value());
  auto dst_file = make_mem_file(loop.get());
  ASSERT_TRUE(loop->run(dst_file->truncate(kSize)).has_value());
  auto src = make_raw_driver(std::move(src_file));
  auto dst = make_raw_driver(std::move(dst_file));
  uint64_t last_done = 0;
  ConvertOptions opts;
  opts.chunk_size = 1 << 20;
  opts.in_flight = 4;
  opts.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, kSize);
    EXPECT_GE(done, last_done);
    last_done = done;
  };
  auto stats = loop->run(convert(*loop, *src, *dst, opts));
  ASSERT_TRUE(stats.has_value()) << stats.error().to_string();
  EXPECT_EQ(last_done, kSize);
  EXPECT_EQ(stats->bytes_read, kSize);
  // 70000 bytes span 18 4 KiB granules (the start is aligned); the last byte needs one more.
  EXPECT_EQ(stats->bytes_written, 19u * 4096);
  std::vector<uint8_t> back(kSize, 1);
  ASSERT_TRUE(loop->run(dst->read(0, back.data(), kSize)).has_value());
  EXPECT_EQ(std::memcmp(back.data(), data.data(), kSize), 0);
}

TEST(OpsConvert, RefusesSmallerDestination) {
  auto loop = IoLoop::create().value();
  auto a = make_mem_file(loop.get());
  ASSERT_TRUE(loop->run(a->truncate(1 << 20)).has_value());
  auto b = make_mem_file(loop.get());
  auto src = make_raw_driver(std::move(a));
  auto dst = make_raw_driver(std::move(b));
  EXPECT_FALSE(loop->run(convert(*loop, *src, *dst, {})).has_value());
}

}  // namespace
}  // namespace img
