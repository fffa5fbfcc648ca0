// qcow2 header decode/encode (libimg/src/qcow2/header.cc): round trips, and malformed headers
// built by encoding a valid header and patching bytes at known offsets (the leveldb
// corruption_test approach). Each bad header must give an error naming the field.

#include <gtest/gtest.h>

#include <random>

#include "img/mem_file.h"
#include "qcow2/format.h"
#include "qcow2/layout.h"
#include "test_util.h"

namespace img::qcow2 {
namespace {

constexpr uint64_t kCs = 65536;
constexpr uint64_t kFileSize = 8 * kCs;

Header valid_header() {
  Header h;
  h.version = 3;
  h.cluster_bits = 16;
  h.size = 1ull << 30;  // two L2 tables' worth with 64 KiB clusters
  h.l1_size = 2;
  h.l1_table_offset = 3 * kCs;
  h.refcount_table_offset = kCs;
  h.refcount_table_clusters = 1;
  return h;
}

std::vector<uint8_t> encode(Header h) {
  auto b = encode_header(h);
  EXPECT_TRUE(b.has_value());
  return b.value_or(std::vector<uint8_t>{});
}

void patch32(std::vector<uint8_t>& b, size_t off, uint32_t v) { store_be32(b.data() + off, v); }
void patch64(std::vector<uint8_t>& b, size_t off, uint64_t v) { store_be64(b.data() + off, v); }

// Decoding must fail with `code` and a message containing `field`.
void expect_error(const std::vector<uint8_t>& b, ErrorCode code, const std::string& field,
                  uint64_t file_size = kFileSize) {
  auto h = decode_header(b, file_size);
  ASSERT_FALSE(h.has_value()) << "accepted a header that should fail on " << field;
  EXPECT_EQ(h.error().code(), code) << h.error().to_string();
  EXPECT_NE(h.error().message().find(field), std::string::npos)
      << "message does not name '" << field << "': " << h.error().message();
}

TEST(Qcow2Header, RoundTripV3WithExtensions) {
  Header h = valid_header();
  h.backing_file = "base.qcow2";
  h.backing_format = "qcow2";
  h.compatible_features = kCompatLazyRefcounts;
  h.other_extensions.push_back({0x12345678, {1, 2, 3, 4, 5}});
  auto b = encode(h);
  ASSERT_EQ(b.size(), kCs);
  auto d = decode_header(b, kFileSize);
  ASSERT_OK(d);
  EXPECT_EQ(d->version, 3u);
  EXPECT_EQ(d->size, h.size);
  EXPECT_EQ(d->header_length, kV3HeaderLengthWithCompression);
  EXPECT_EQ(d->backing_file, "base.qcow2");
  EXPECT_EQ(d->backing_format, "qcow2");
  EXPECT_EQ(d->compatible_features, kCompatLazyRefcounts);
  ASSERT_EQ(d->other_extensions.size(), 1u);
  EXPECT_EQ(d->other_extensions[0].type, 0x12345678u);
  EXPECT_EQ(d->other_extensions[0].data, (std::vector<uint8_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(feature_bit_name(*d, 0, 0), "dirty bit");
  EXPECT_EQ(feature_bit_name(*d, 1, 0), "lazy refcounts");
  // Encoding what was decoded gives the same bytes: unknown extensions survive rewrites.
  Header again = *d;
  EXPECT_EQ(encode(again), b);
}

TEST(Qcow2Header, RoundTripV2) {
  Header h = valid_header();
  h.version = 2;
  h.backing_file = "/images/base.raw";
  h.backing_format = "raw";
  auto b = encode(h);
  EXPECT_GT(load_be64(b.data() + 8), kV2HeaderLength);  // the name follows the extensions
  auto d = decode_header(b, kFileSize);
  ASSERT_OK(d);
  EXPECT_EQ(d->version, 2u);
  EXPECT_EQ(d->header_length, kV2HeaderLength);
  EXPECT_EQ(d->refcount_order, 4u);
  EXPECT_EQ(d->backing_file, "/images/base.raw");
  EXPECT_EQ(d->backing_format, "raw");
  EXPECT_TRUE(d->feature_names.empty());
}

TEST(Qcow2Header, RoundTripZstdAndRefcountOrder) {
  Header h = valid_header();
  h.compression_type = 1;
  h.incompatible_features = kIncompatCompressionType;
  h.refcount_order = 6;
  auto d = decode_header(encode(h), kFileSize);
  ASSERT_OK(d);
  EXPECT_EQ(d->compression_type, 1);
  EXPECT_EQ(d->refcount_bits(), 64u);
}

TEST(Qcow2Header, ReadHeaderFromFile) {
  auto f = make_mem_file();
  auto b = encode(valid_header());
  f->bytes() = b;
  f->bytes().resize(kFileSize);
  auto loop = test::make_loop();
  auto h = loop->run(read_header(*f));
  ASSERT_OK(h);
  EXPECT_EQ(h->l1_table_offset, 3 * kCs);
}

TEST(Qcow2Header, TruncatedFile) {
  auto b = encode(valid_header());
  b.resize(50);
  expect_error(b, ErrorCode::kCorruption, "too short", 50);
  b = encode(valid_header());
  b.resize(90);  // version 3 needs 104 bytes
  expect_error(b, ErrorCode::kCorruption, "truncated", 90);
}

TEST(Qcow2Header, BadMagicAndVersion) {
  auto b = encode(valid_header());
  b[0] = 'X';
  expect_error(b, ErrorCode::kCorruption, "magic");
  b = encode(valid_header());
  patch32(b, 4, 4);
  expect_error(b, ErrorCode::kNotSupported, "version 4");
}

TEST(Qcow2Header, ClusterBitsOutOfRange) {
  auto b = encode(valid_header());
  patch32(b, 20, 8);
  expect_error(b, ErrorCode::kCorruption, "cluster_bits 8");
  patch32(b, 20, 22);
  expect_error(b, ErrorCode::kCorruption, "cluster_bits 22");
  patch32(b, 20, 0xffffffff);
  expect_error(b, ErrorCode::kCorruption, "cluster_bits");
}

TEST(Qcow2Header, RefcountOrderAndHeaderLength) {
  auto b = encode(valid_header());
  patch32(b, 96, 7);
  expect_error(b, ErrorCode::kCorruption, "refcount_order 7");
  for (uint32_t len : {0u, 100u, 108u, 70000u}) {
    b = encode(valid_header());
    patch32(b, 100, len);
    expect_error(b, ErrorCode::kCorruption, "header_length " + std::to_string(len));
  }
}

TEST(Qcow2Header, EncryptionNotSupported) {
  auto b = encode(valid_header());
  patch32(b, 32, 1);
  expect_error(b, ErrorCode::kNotSupported, "crypt_method 1");
}

TEST(Qcow2Header, L1Size) {
  auto b = encode(valid_header());
  patch32(b, 36, 0x01000000);  // 128 MiB of entries
  expect_error(b, ErrorCode::kNotSupported, "l1_size");
  patch32(b, 36, 1);  // 1 GiB needs 2 entries
  expect_error(b, ErrorCode::kCorruption, "l1_size 1 too small");
}

TEST(Qcow2Header, L1TableOffset) {
  auto b = encode(valid_header());
  patch64(b, 40, 3 * kCs + 512);
  expect_error(b, ErrorCode::kCorruption, "l1_table_offset");
  patch64(b, 40, 0);  // inside the header cluster
  expect_error(b, ErrorCode::kCorruption, "l1_table_offset");
  patch64(b, 40, 100 * kCs);  // past the end of the file
  expect_error(b, ErrorCode::kCorruption, "l1_table_offset");
  patch64(b, 40, 0xffffffffffff0000ull);  // overflows offset + size
  expect_error(b, ErrorCode::kCorruption, "l1_table_offset");
}

TEST(Qcow2Header, RefcountTable) {
  auto b = encode(valid_header());
  patch32(b, 56, 0);
  expect_error(b, ErrorCode::kCorruption, "refcount_table_clusters");
  patch32(b, 56, 129);  // 129 * 64 KiB > 8 MiB
  expect_error(b, ErrorCode::kCorruption, "refcount_table_clusters 129");
  patch32(b, 56, 1);
  patch64(b, 48, 0);
  expect_error(b, ErrorCode::kCorruption, "refcount_table_offset");
  patch64(b, 48, kCs + 8);
  expect_error(b, ErrorCode::kCorruption, "refcount_table_offset");
  patch64(b, 48, kFileSize);
  expect_error(b, ErrorCode::kCorruption, "refcount_table_offset");
}

TEST(Qcow2Header, Snapshots) {
  auto b = encode(valid_header());
  patch32(b, 60, 70000);
  expect_error(b, ErrorCode::kCorruption, "nb_snapshots 70000");
  patch32(b, 60, 1);
  patch64(b, 64, 0);
  expect_error(b, ErrorCode::kCorruption, "snapshots_offset");
  patch64(b, 64, kFileSize);
  expect_error(b, ErrorCode::kCorruption, "snapshots_offset");
  patch64(b, 64, 5 * kCs + 1);
  expect_error(b, ErrorCode::kCorruption, "snapshots_offset");
}

TEST(Qcow2Header, SizeTooLarge) {
  auto b = encode(valid_header());
  patch64(b, 24, (1ull << 56) + 1);
  expect_error(b, ErrorCode::kCorruption, "size");
  patch64(b, 24, UINT64_MAX);
  expect_error(b, ErrorCode::kCorruption, "size");
}

TEST(Qcow2Header, BackingFileName) {
  Header h = valid_header();
  h.backing_file = "base";
  auto b = encode(h);
  patch32(b, 16, 2000);
  expect_error(b, ErrorCode::kCorruption, "backing_file_size 2000");
  b = encode(h);
  patch64(b, 8, kCs - 2);  // name would cross the first cluster
  expect_error(b, ErrorCode::kCorruption, "backing_file_offset");
  // Inside the header fields: QEMU accepts it (the name is what those bytes spell, up to a NUL).
  b = encode(h);
  patch64(b, 8, 105);  // the padding after compression_type
  patch32(b, 16, 4);
  b[105] = 'a';
  b[106] = 'b';
  b[107] = 0;
  auto inside = decode_header(b, kFileSize);
  ASSERT_TRUE(inside.has_value()) << inside.error().to_string();
  EXPECT_EQ(inside->backing_file, "ab");
  h.backing_file.assign(1024, 'a');
  EXPECT_FALSE(encode_header(h).has_value());
}

TEST(Qcow2Header, ExtensionLengthOverflow) {
  auto b = encode(valid_header());
  // The first extension (the feature name table) begins right after the 112-byte header.
  ASSERT_EQ(load_be32(b.data() + 112), kExtFeatureNameTable);
  patch32(b, 116, 0xffffffff);
  expect_error(b, ErrorCode::kCorruption, "length 4294967295");
  patch32(b, 116, kCs - 112 - 8 + 1);
  expect_error(b, ErrorCode::kCorruption, "header extension 0x6803f857");
}

// Regression (found by the chain model test): a version 3 overlay with 512-byte clusters could
// not be created ("header extensions and backing file name do not fit"), since the feature name
// table filled the cluster; QEMU 7.2 omits that table for clusters of 4 KiB and less.
TEST(Qcow2Header, FeatureNameTableOnlyForClustersOver4KiBAsQemuWrites) {
  for (uint32_t bits = 9; bits <= 16; ++bits) {
    SCOPED_TRACE(bits);
    Header h = valid_header();
    h.cluster_bits = bits;
    h.backing_file = "l0.raw";
    h.backing_format = "raw";
    auto b = encode_header(h);
    ASSERT_OK(b);
    ASSERT_EQ(b->size(), 1u << bits);
    // The backing format comes first (16 bytes with its header), then the table or the end.
    ASSERT_EQ(load_be32(b->data() + 112), kExtBackingFormat);
    EXPECT_EQ(load_be32(b->data() + 128), bits > 12 ? kExtFeatureNameTable : kExtEnd);
  }
}

TEST(Qcow2Header, UnknownIncompatibleBit) {
  auto b = encode(valid_header());
  patch64(b, 72, 1ull << 7);
  expect_error(b, ErrorCode::kNotSupported, "unsupported incompatible feature bit 7");
  Header h = valid_header();
  h.feature_names.push_back({0, 7, "foo"});
  b = encode(h);
  patch64(b, 72, 1ull << 7);
  expect_error(b, ErrorCode::kNotSupported, "unsupported incompatible feature bit 7 (foo)");
}

TEST(Qcow2Header, KnownBitsDecodedUnknownCompatibleIgnored) {
  auto b = encode(valid_header());
  patch64(b, 72, kIncompatDirty | kIncompatCorrupt | kIncompatExtendedL2);
  patch64(b, 80, kCompatLazyRefcounts | (1ull << 40));
  auto h = decode_header(b, kFileSize);
  // Extended L2 entries are 16 bytes: a 64 KiB table maps 256 MiB, so 1 GiB needs 4 L1 entries.
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("l1_size"), std::string::npos);
  patch32(b, 36, 4);
  h = decode_header(b, kFileSize);
  ASSERT_OK(h);
  EXPECT_TRUE(h->has(kIncompatDirty));
  EXPECT_TRUE(h->has(kIncompatCorrupt));
  EXPECT_TRUE(h->has(kIncompatExtendedL2));
}

TEST(Qcow2Header, CompressionTypeMustMatchBit) {
  auto b = encode(valid_header());
  b[104] = 1;  // zstd without the incompatible bit
  expect_error(b, ErrorCode::kCorruption, "compression_type 1");
  b[104] = 7;
  expect_error(b, ErrorCode::kNotSupported, "compression_type 7");
}

// The bitmaps bit is kept (bitmaps are marked in_use by a writer instead of being dropped).
TEST(Qcow2Header, UnknownAutoclearBitsClearedOnRewrite) {
  auto b = encode(valid_header());
  patch64(b, 88, kAutoclearBitmaps | kAutoclearDataFileRaw | (1ull << 9));
  auto h = decode_header(b, kFileSize);
  ASSERT_OK(h);
  EXPECT_TRUE(needs_autoclear_rewrite(*h));
  Header next = header_for_rewrite(*h);
  EXPECT_EQ(next.autoclear_features, kAutoclearBitmaps | kAutoclearDataFileRaw);
  EXPECT_FALSE(needs_autoclear_rewrite(next));
}

TEST(Qcow2Header, ShortFileReadsZerosPastEnd) {
  // QEMU writes a whole header cluster, but a file cut after the header is still decodable as
  // far as the header goes (the tables then lie past the end).
  auto b = encode(valid_header());
  b.resize(200);
  expect_error(b, ErrorCode::kCorruption, "past the end of the file", 200);
}

// Random byte flips in the first 512 bytes must give an error or a header, never a crash.
TEST(Qcow2Header, RandomCorruptionNeverCrashes) {
  Header h = valid_header();
  h.backing_file = "b";
  h.backing_format = "qcow2";
  const auto good = encode(h);
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 20000; ++iter) {
    auto b = good;
    int flips = 1 + rng() % 8;
    for (int i = 0; i < flips; ++i) b[rng() % 512] ^= static_cast<uint8_t>(1u << (rng() % 8));
    auto d = decode_header(std::span<const uint8_t>(b.data(), rng() % 2 ? b.size() : 512),
                           kFileSize);
    if (d) {
      Header copy = *d;
      (void)encode_header(copy);
    }
  }
}

}  // namespace
}  // namespace img::qcow2
