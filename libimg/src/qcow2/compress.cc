// Deflate and zstd for qcow2 compressed clusters. The parameters match what QEMU 7.2 writes
// (block/qcow2-threads.c): deflate at Z_DEFAULT_COMPRESSION with a raw stream and a 2^12 window
// (windowBits -12, memLevel 9); zstd at its default level, one frame per cluster. Reading
// accepts what QEMU accepts: trailing bytes after the stream (the descriptor counts whole
// sectors), and for zstd a cluster made of several frames.
//
// Each thread keeps one deflate, one inflate and one zstd context and resets them per cluster:
// setting a deflate stream up costs more than compressing 64 KiB of text, and compression runs on
// a thread pool where the same few threads compress every cluster.
#include "qcow2/compress.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <climits>

namespace img::qcow2 {

namespace {

constexpr int kDeflateWindowBits = -12;  // raw deflate (no zlib header), 4 KiB window
constexpr int kDeflateMemLevel = 9;
constexpr int kMaxZstdWindowLog = 22;  // 4 MiB: twice the largest cluster

struct ThreadCodecs {
  z_stream deflate{};
  z_stream inflate{};
  bool deflate_ok = false;
  bool inflate_ok = false;
  ZSTD_CCtx* zc = nullptr;
  ZSTD_DCtx* zd = nullptr;
  ~ThreadCodecs() {
    if (deflate_ok) deflateEnd(&deflate);
    if (inflate_ok) inflateEnd(&inflate);
    ZSTD_freeCCtx(zc);
    ZSTD_freeDCtx(zd);
  }
};

ThreadCodecs& codecs() {
  thread_local ThreadCodecs c;
  return c;
}

Status inflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ThreadCodecs& c = codecs();
  z_stream& s = c.inflate;
  if (!c.inflate_ok) {
    if (inflateInit2(&s, kDeflateWindowBits) != Z_OK) {
      return make_error(ErrorCode::kNoSpace, "inflateInit2 failed (out of memory)");
    }
    c.inflate_ok = true;
  } else if (inflateReset(&s) != Z_OK) {
    return corruption("inflateReset failed");
  }
  // A cluster is at most 2 MiB and a descriptor covers at most 4 MiB: both fit zlib's uInt.
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int r = inflate(&s, Z_FINISH);
  // Z_BUF_ERROR with the output full: the cluster is complete and the input holds more (the
  // descriptor's sector count overstates the stream). QEMU accepts exactly these two outcomes.
  if ((r == Z_STREAM_END || r == Z_BUF_ERROR) && s.avail_out == 0) return {};
  if (r == Z_STREAM_END || r == Z_BUF_ERROR) {
    return corruption(strfmt("deflate stream %s after %zu of %zu bytes",
                             r == Z_STREAM_END ? "ends" : "is truncated", out.size() - s.avail_out,
                             out.size()));
  }
  return corruption(strfmt("bad deflate stream (%s)", s.msg ? s.msg : zError(r)));
}

Status zstd_decompress_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ThreadCodecs& c = codecs();
  if (!c.zd) {
    c.zd = ZSTD_createDCtx();
    if (!c.zd) return make_error(ErrorCode::kNoSpace, "ZSTD_createDCtx failed (out of memory)");
    // A hostile frame header may ask for a window of up to 2^27 bytes (or 2^31 with the
    // advanced API); no cluster needs more than its 2 MiB maximum, so refuse larger windows
    // instead of allocating them.
    ZSTD_DCtx_setParameter(c.zd, ZSTD_d_windowLogMax, kMaxZstdWindowLog);
  } else {
    ZSTD_DCtx_reset(c.zd, ZSTD_reset_session_only);
  }
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t r = 0;
  // Frames follow each other until the cluster is full. Every call must make progress, so a
  // stream that waits for input it will never get cannot loop forever.
  while (ob.pos < ob.size) {
    size_t in0 = ib.pos, out0 = ob.pos;
    r = ZSTD_decompressStream(c.zd, &ob, &ib);
    if (ZSTD_isError(r)) return corruption(strfmt("bad zstd stream (%s)", ZSTD_getErrorName(r)));
    if (ib.pos == in0 && ob.pos == out0) {
      return corruption(strfmt("zstd stream ends after %zu of %zu bytes", ob.pos, ob.size));
    }
  }
  // The output is full; a frame that still has data to give decompresses to more than a cluster.
  if (r != 0) {
    return corruption(strfmt("zstd stream holds more than the cluster size (%zu bytes)", ob.size));
  }
  return {};
}

Result<size_t> deflate_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ThreadCodecs& c = codecs();
  z_stream& s = c.deflate;
  if (!c.deflate_ok) {
    if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kDeflateWindowBits, kDeflateMemLevel,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      return make_error(ErrorCode::kNoSpace, "deflateInit2 failed (out of memory)");
    }
    c.deflate_ok = true;
  } else if (deflateReset(&s) != Z_OK) {
    return invalid_argument("deflateReset failed");
  }
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int r = deflate(&s, Z_FINISH);
  if (r == Z_STREAM_END) return out.size() - s.avail_out;
  if (r == Z_OK || r == Z_BUF_ERROR) return size_t{0};  // out is full: does not fit
  return invalid_argument(strfmt("deflate failed (%s)", zError(r)));
}

Result<size_t> zstd_compress_cluster(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ThreadCodecs& c = codecs();
  if (!c.zc) {
    c.zc = ZSTD_createCCtx();
    if (!c.zc) return make_error(ErrorCode::kNoSpace, "ZSTD_createCCtx failed (out of memory)");
  }
  size_t r = ZSTD_compress2(c.zc, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(r)) {
    if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return size_t{0};
    return invalid_argument(strfmt("zstd compression failed (%s)", ZSTD_getErrorName(r)));
  }
  return r;
}

}  // namespace

const char* codec_name(Codec c) { return c == Codec::kZstd ? "zstd" : "zlib"; }

Status decompress_cluster(Codec c, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (in.size() > UINT_MAX || out.size() > UINT_MAX) {
    return invalid_argument("decompress_cluster: buffer too large");
  }
  return c == Codec::kZstd ? zstd_decompress_cluster(in, out) : inflate_cluster(in, out);
}

Result<size_t> compress_cluster(Codec c, std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (in.size() > UINT_MAX || out.size() > UINT_MAX) {
    return invalid_argument("compress_cluster: buffer too large");
  }
  return c == Codec::kZstd ? zstd_compress_cluster(in, out) : deflate_cluster(in, out);
}

}  // namespace img::qcow2
