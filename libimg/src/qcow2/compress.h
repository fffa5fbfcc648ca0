// Cluster compression codecs (qcow2.rst "Compressed Clusters Descriptor" and the header's
// compression_type field): deflate (raw RFC 1951, no zlib header, 4 KiB window, as QEMU writes
// it) and zstd (one or more zstd frames). Pure functions over byte spans, so the fuzz target
// fuzz/qcow2_compress_fuzz.cc drives them directly.
//
// Thread-safety: every function may be called from any thread at once (each thread keeps its own
// codec contexts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "img/status.h"

namespace img::qcow2 {

// The header's compression_type values (spec: "Header", byte 104).
enum class Codec : uint8_t { kDeflate = 0, kZstd = 1 };

const char* codec_name(Codec c);  // "zlib" or "zstd", as qemu-img names them

// Decompresses one cluster from `in` into all of `out` (out.size() is the cluster size). `in` is
// what the descriptor covers, which may be more than the stream (the descriptor counts 512-byte
// sectors): decompression stops when `out` is full and does not require consuming all input.
// A stream that is malformed, ends before `out` is full, or (zstd) continues past it is a
// corruption error saying which.
Status decompress_cluster(Codec c, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses `in` into `out`. Returns the compressed length, or 0 when the compressed form does
// not fit in out.size() bytes (the caller then stores the data uncompressed).
Result<size_t> compress_cluster(Codec c, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace img::qcow2
