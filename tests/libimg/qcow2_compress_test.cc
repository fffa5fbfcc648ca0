// Compressed clusters: the codecs on their own (round trips, overstated input, hostile streams),
// the thread pool handing work back to the IoLoop, and the qcow2 driver's compressed reads and
// writes on in-memory images (packing, shared sectors, hostile descriptors, writes over
// compressed clusters), each image checked with the image checker afterwards.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "img/bytes.h"
#include "qcow2/compress.h"
#include "qcow2/l2_entry.h"
#include "qcow2_test_util.h"
#include "util/thread_pool.h"

namespace img {
namespace {

using qcow2::Codec;
using test::expect_clean;
using test::make_loop;
using test::MemImage;

// Text-like data: words from a small vocabulary, so it compresses about 3:1 like real text.
std::vector<uint8_t> text_data(size_t n, uint32_t seed) {
  static const char* kWords[] = {"qcow2 ",  "cluster ", "refcount ", "table ",   "guest ", "host ",
                                 "offset ", "sector ",  "zstd ",     "deflate ", "\n"};
  std::mt19937 rng(seed);
  std::vector<uint8_t> v;
  while (v.size() < n) {
    const char* w = kWords[rng() % 11];
    v.insert(v.end(), w, w + std::strlen(w));
  }
  v.resize(n);
  return v;
}

std::vector<uint8_t> random_data(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

class CodecTest : public ::testing::TestWithParam<Codec> {};

TEST_P(CodecTest, RoundTripStopsAtClusterSizeWithTrailingInput) {
  auto in = text_data(65536, 1);
  std::vector<uint8_t> c(65535);
  auto n = qcow2::compress_cluster(GetParam(), in, c);
  ASSERT_OK(n);
  ASSERT_GT(*n, 0u);
  ASSERT_LT(*n, 30000u);  // text compresses
  // The descriptor counts whole sectors: up to 511 bytes (here: garbage) follow the stream.
  std::vector<uint8_t> covered(c.begin(), c.begin() + *n);
  for (int i = 0; i < 511; ++i) covered.push_back(static_cast<uint8_t>(0xa5 ^ i));
  std::vector<uint8_t> out(65536);
  ASSERT_OK(qcow2::decompress_cluster(GetParam(), covered, out));
  EXPECT_EQ(out, in);
}

TEST_P(CodecTest, IncompressibleDataDoesNotFit) {
  auto in = random_data(65536, 2);
  std::vector<uint8_t> c(65535);
  auto n = qcow2::compress_cluster(GetParam(), in, c);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
}

TEST_P(CodecTest, TruncatedStreamIsCorruption) {
  auto in = text_data(65536, 3);
  std::vector<uint8_t> c(65535);
  auto n = qcow2::compress_cluster(GetParam(), in, c);
  ASSERT_OK(n);
  std::vector<uint8_t> out(65536);
  auto s = qcow2::decompress_cluster(GetParam(), std::span(c.data(), *n / 2), out);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
}

TEST_P(CodecTest, StreamOfAShorterClusterIsCorruption) {
  // A valid stream that decompresses to 32 KiB where the cluster is 64 KiB.
  auto in = text_data(32768, 4);
  std::vector<uint8_t> c(32767);
  auto n = qcow2::compress_cluster(GetParam(), in, c);
  ASSERT_OK(n);
  std::vector<uint8_t> out(65536);
  auto s = qcow2::decompress_cluster(GetParam(), std::span(c.data(), *n), out);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(s.error().message().find("32768 of 65536"), std::string::npos) << s.error().message();
}

TEST_P(CodecTest, GarbageIsCorruptionNotACrash) {
  std::vector<uint8_t> out(65536);
  for (uint32_t seed = 0; seed < 200; ++seed) {
    auto junk = random_data(1 + seed * 37, seed);
    auto s = qcow2::decompress_cluster(GetParam(), junk, out);
    if (!s) {
      EXPECT_EQ(s.error().code(), ErrorCode::kCorruption) << s.error().message();
    }
  }
  auto s = qcow2::decompress_cluster(GetParam(), std::span<const uint8_t>(), out);
  EXPECT_FALSE(s.has_value());
}

INSTANTIATE_TEST_SUITE_P(Both, CodecTest, ::testing::Values(Codec::kDeflate, Codec::kZstd),
                         [](const auto& info) {
                           return std::string(qcow2::codec_name(info.param));
                         });

TEST(Codec, ZstdStreamLongerThanTheClusterIsCorruption) {
  // zstd knows where its frame ends: a frame holding 128 KiB does not fit a 64 KiB cluster.
  auto in = text_data(131072, 5);
  std::vector<uint8_t> c(131072);
  auto n = qcow2::compress_cluster(Codec::kZstd, in, c);
  ASSERT_OK(n);
  std::vector<uint8_t> out(65536);
  auto s = qcow2::decompress_cluster(Codec::kZstd, std::span(c.data(), *n), out);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("more than the cluster size"), std::string::npos);
}

TEST(Codec, DeflateIsRawWithTheSmallWindowQemuUses) {
  // What we write inflates with zlib's raw mode and a 2^12 window (inflateInit2(-12)).
  auto in = text_data(65536, 6);
  std::vector<uint8_t> c(65535);
  auto n = qcow2::compress_cluster(Codec::kDeflate, in, c);
  ASSERT_OK(n);
  z_stream s{};
  ASSERT_EQ(inflateInit2(&s, -12), Z_OK);
  std::vector<uint8_t> out(65536);
  s.next_in = c.data();
  s.avail_in = static_cast<uInt>(*n);
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(inflate(&s, Z_FINISH), Z_STREAM_END);
  inflateEnd(&s);
  EXPECT_EQ(out, in);
}

// --- the thread pool and IoLoop::post_remote -----------------------------------------------

Task<void> pool_user(IoLoop& loop, ThreadPool& pool, std::atomic<int>& sum, int& resumed_here,
                     std::thread::id loop_thread) {
  std::vector<int> v(17, 0);
  co_await parallel_for(pool, loop, v.size(), [&](size_t i) { v[i] = static_cast<int>(i) + 1; });
  // Resumed on the loop thread, with every job's result visible.
  if (std::this_thread::get_id() == loop_thread) ++resumed_here;
  int s = 0;
  for (int x : v) s += x;
  sum += s;
}

TEST(ThreadPool, ManyCoroutinesAwaitPoolJobsAndResumeOnTheLoop) {
  auto loop = make_loop();
  ThreadPool pool(4);
  std::atomic<int> sum{0};
  int resumed_here = 0;
  constexpr int kTasks = 500;
  for (int i = 0; i < kTasks; ++i) {
    loop->spawn(pool_user(*loop, pool, sum, resumed_here, std::this_thread::get_id()));
  }
  loop->drain();
  EXPECT_EQ(resumed_here, kTasks);
  EXPECT_EQ(sum.load(), kTasks * (17 * 18 / 2));
}

// --- the driver -----------------------------------------------------------------------------

Qcow2CreateOptions opts(const char* type, uint32_t cluster = 65536, uint64_t size = 8 << 20) {
  Qcow2CreateOptions o;
  o.size = size;
  o.cluster_size = cluster;
  o.compression_type = type;
  return o;
}

// The raw L2 entry of guest cluster gc (the image has one L2 table).
uint64_t* l2_entry_ptr(std::vector<uint8_t>& b, uint64_t gc) {
  uint64_t l1_off = load_be64(&b[40]);
  uint64_t l2_off = load_be64(&b[l1_off]) & test::qcow2_l1_offset_mask();
  return reinterpret_cast<uint64_t*>(&b[l2_off + gc * 8]);
}
uint64_t l2_entry(std::vector<uint8_t>& b, uint64_t gc) {
  return load_be64(reinterpret_cast<uint8_t*>(l2_entry_ptr(b, gc)));
}

class DriverTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DriverTest, WriteCompressedReadsBackAndPacksIntoSharedHostClusters) {
  auto loop = make_loop();
  MemImage m(*loop, opts(GetParam()));
  auto data = text_data(32 * 65536, 7);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
  // A read that starts and ends inside compressed clusters.
  std::vector<uint8_t> part(100000);
  ASSERT_OK(loop->run(m.drv->read(12345, part.data(), part.size())));
  EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 12345));
  auto st = loop->run(m.drv->block_status(0, data.size()));
  ASSERT_OK(st);
  EXPECT_TRUE(st->compressed);
  m.close();
  // Packed byte-granular: 32 clusters of ~1/3 compression in far fewer host clusters, each
  // descriptor starting where the previous one ended.
  auto& b = m.file_bytes();
  uint64_t prev_end = 0;
  for (uint64_t gc = 0; gc < 32; ++gc) {
    auto d = qcow2::decode_l2(l2_entry(b, gc), 16, 3);
    ASSERT_EQ(d.entry.kind, qcow2::ClusterKind::kCompressed);
    if (gc > 0) {  // starts in the sector where the previous one ends
      EXPECT_LT(d.entry.host_offset, prev_end) << gc;
      EXPECT_GE(d.entry.host_offset, prev_end - 512) << gc;
    }
    prev_end = d.entry.host_offset + d.entry.compressed_size;
  }
  EXPECT_LT(b.size(), 16u * 65536);
  expect_clean(*loop, m);
  m.reopen();
  got.assign(data.size(), 0);
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
}

TEST_P(DriverTest, ClustersThatShareOneSector) {
  // 512-byte clusters of repeated bytes compress to a few bytes each: many share a sector.
  auto loop = make_loop();
  MemImage m(*loop, opts(GetParam(), 512, 1 << 20));
  std::vector<uint8_t> data(64 * 512);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i / 512 + 1);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  m.close();
  auto& b = m.file_bytes();
  auto a = qcow2::decode_l2(l2_entry(b, 0), 9, 3).entry;
  auto c = qcow2::decode_l2(l2_entry(b, 1), 9, 3).entry;
  ASSERT_EQ(a.kind, qcow2::ClusterKind::kCompressed);
  EXPECT_EQ(a.host_offset >> 9, c.host_offset >> 9) << "second cluster not in the first's sector";
  expect_clean(*loop, m);
  m.reopen();
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
}

TEST_P(DriverTest, IncompressibleClusterIsStoredAsANormalCluster) {
  auto loop = make_loop();
  MemImage m(*loop, opts(GetParam()));
  auto data = text_data(2 * 65536, 8);
  auto noise = random_data(65536, 9);
  std::copy(noise.begin(), noise.end(), data.begin() + 65536);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  m.close();
  auto& b = m.file_bytes();
  EXPECT_EQ(qcow2::decode_l2(l2_entry(b, 0), 16, 3).entry.kind, qcow2::ClusterKind::kCompressed);
  EXPECT_EQ(qcow2::decode_l2(l2_entry(b, 1), 16, 3).entry.kind, qcow2::ClusterKind::kNormal);
  expect_clean(*loop, m);
  m.reopen();
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
}

TEST_P(DriverTest, PartialWriteIntoCompressedClusterMergesAndFreesIt) {
  auto loop = make_loop();
  MemImage m(*loop, opts(GetParam()));
  auto data = text_data(4 * 65536, 10);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  // Into the middle of cluster 1, and across the end of cluster 2 into cluster 3.
  std::vector<uint8_t> a(1000, 0xee), c(70000, 0x77);
  ASSERT_OK(loop->run(m.drv->write(65536 + 3000, a.data(), a.size())));
  ASSERT_OK(loop->run(m.drv->write(2 * 65536 + 60000, c.data(), c.size())));
  std::copy(a.begin(), a.end(), data.begin() + 65536 + 3000);
  std::copy(c.begin(), c.end(), data.begin() + 2 * 65536 + 60000);
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
  m.close();
  auto& b = m.file_bytes();
  EXPECT_EQ(qcow2::decode_l2(l2_entry(b, 0), 16, 3).entry.kind, qcow2::ClusterKind::kCompressed);
  for (uint64_t gc = 1; gc < 4; ++gc) {
    EXPECT_EQ(qcow2::decode_l2(l2_entry(b, gc), 16, 3).entry.kind, qcow2::ClusterKind::kNormal);
  }
  expect_clean(*loop, m);  // no leaks: the replaced compressed clusters' references dropped
  m.reopen();
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
}

TEST_P(DriverTest, OverwritingEveryCompressedClusterFreesTheirHostClusters) {
  auto loop = make_loop();
  MemImage m(*loop, opts(GetParam()));
  auto data = text_data(8 * 65536, 11);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  std::vector<uint8_t> z(8 * 65536, 0x11);
  ASSERT_OK(loop->run(m.drv->write(0, z.data(), z.size())));
  // Compressed again over normal clusters, then read.
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
  m.close();
  expect_clean(*loop, m);
}

TEST_P(DriverTest, LastClusterOfAnUnalignedImageIsPadded) {
  auto loop = make_loop();
  // The virtual size is in whole sectors (3 clusters and 1024 bytes); a compressed write of the
  // partial last cluster must reach the image's last sector, and one stopping short of it is
  // refused (its zero padding would cover bytes the caller did not write).
  MemImage m(*loop, opts(GetParam(), 65536, 3 * 65536 + 1024));
  auto data = text_data(3 * 65536 + 1024, 12);
  auto short_of_end = loop->run(m.drv->write_compressed(0, data.data(), data.size() - 600));
  ASSERT_FALSE(short_of_end.has_value());
  EXPECT_EQ(short_of_end.error().code(), ErrorCode::kInvalidArgument);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  // Not whole clusters elsewhere: refused.
  auto bad = loop->run(m.drv->write_compressed(4096, data.data(), 65536));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  m.close();
  expect_clean(*loop, m);
  EXPECT_EQ(m.file_bytes().size() % 512, 0u);  // the file end is rounded to a sector
  m.reopen();
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(loop->run(m.drv->read(0, got.data(), got.size())));
  EXPECT_EQ(got, data);
}

INSTANTIATE_TEST_SUITE_P(Both, DriverTest, ::testing::Values("zlib", "zstd"));

// --- hostile descriptors --------------------------------------------------------------------

// An image whose cluster 0 is compressed; corrupt() rewrites its entry, then the read must fail
// with a corruption error whose message contains `want`.
void expect_hostile(const char* type,
                    const std::function<void(std::vector<uint8_t>&, uint64_t* entry)>& corrupt,
                    const std::string& want) {
  auto loop = make_loop();
  MemImage m(*loop, opts(type));
  auto data = text_data(65536, 13);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  m.close();
  corrupt(m.file_bytes(), l2_entry_ptr(m.file_bytes(), 0));
  ASSERT_OK(m.open({.read_only = true}));
  std::vector<uint8_t> got(65536);
  auto s = loop->run(m.drv->read(0, got.data(), got.size()));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption) << s.error().to_string();
  EXPECT_NE(s.error().message().find(want), std::string::npos) << s.error().message();
  EXPECT_NE(s.error().message().find("guest offset 0x0"), std::string::npos) << s.error().message();
}

TEST(CompressedHostile, DescriptorPastTheEndOfTheFile) {
  expect_hostile(
      "zlib",
      [](std::vector<uint8_t>& b, uint64_t* e) {
        store_be64(reinterpret_cast<uint8_t*>(e),
                   qcow2::encode_compressed(b.size() + (1 << 20), 3000, 16).entry);
      },
      "past the end of the file");
}

TEST(CompressedHostile, DescriptorPointingAtTheHeaderDoesNotDecompress) {
  for (const char* type : {"zlib", "zstd"}) {
    expect_hostile(
        type,
        [](std::vector<uint8_t>&, uint64_t* e) {
          store_be64(reinterpret_cast<uint8_t*>(e), qcow2::encode_compressed(0, 4096, 16).entry);
        },
        "does not decompress");
  }
}

TEST(CompressedHostile, StreamThatDecompressesToTheWrongSize) {
  for (const char* type : {"zlib", "zstd"}) {
    Codec codec = std::string(type) == "zstd" ? Codec::kZstd : Codec::kDeflate;
    expect_hostile(
        type,
        [codec](std::vector<uint8_t>& b, uint64_t* e) {
          // A valid stream of 20000 bytes, appended to the file, replaces cluster 0's data.
          auto short_data = text_data(20000, 14);
          std::vector<uint8_t> c(20000);
          auto n = qcow2::compress_cluster(codec, short_data, c);
          ASSERT_TRUE(n && *n > 0);
          uint64_t at = align_up(b.size(), 512);
          b.resize(at + *n);
          std::memcpy(&b[at], c.data(), *n);
          store_be64(reinterpret_cast<uint8_t*>(e), qcow2::encode_compressed(at, *n, 16).entry);
        },
        "20000 of 65536");
  }
}

TEST(CompressedHostile, WriteOverADescriptorPointingAtMetadataMarksCorrupt) {
  auto loop = make_loop();
  MemImage m(*loop, opts("zlib"));
  auto data = text_data(65536, 15);
  ASSERT_OK(loop->run(m.drv->write_compressed(0, data.data(), data.size())));
  m.close();
  auto& b = m.file_bytes();
  uint64_t reftable = load_be64(&b[48]);
  store_be64(reinterpret_cast<uint8_t*>(l2_entry_ptr(b, 0)),
             qcow2::encode_compressed(reftable, 1000, 16).entry);
  ASSERT_OK(m.open({}));
  std::vector<uint8_t> w(65536, 1);
  auto s = loop->run(m.drv->write(0, w.data(), w.size()));
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(s.error().message().find("points into metadata"), std::string::npos);
  m.abandon();
}

}  // namespace
}  // namespace img
