// libFuzzer target: the qcow2 cluster codecs (libimg/src/qcow2/compress.cc). The first byte picks
// the codec (bit 0) and the cluster size (512 B .. 2 MiB, bits 1-4); the rest is a compressed
// descriptor's bytes. Decompression must fill the cluster or fail with a corruption error, never
// crash or allocate without bound; what decompresses must compress and decompress back to itself.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "qcow2/compress.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto codec = (data[0] & 1) ? img::qcow2::Codec::kZstd : img::qcow2::Codec::kDeflate;
  size_t cluster = size_t{512} << ((data[0] >> 1) % 13);
  std::span<const uint8_t> in(data + 1, size - 1);
  std::vector<uint8_t> out(cluster);
  auto s = img::qcow2::decompress_cluster(codec, in, out);
  if (!s) {
    if (s.error().code() != img::ErrorCode::kCorruption) __builtin_trap();
    return 0;
  }
  std::vector<uint8_t> c(cluster - 1), back(cluster);
  auto n = img::qcow2::compress_cluster(codec, out, c);
  if (!n) __builtin_trap();
  if (*n == 0) return 0;  // did not fit: stored uncompressed
  if (!img::qcow2::decompress_cluster(codec, std::span(c.data(), *n), back)) __builtin_trap();
  if (back != out) __builtin_trap();
  return 0;
}
