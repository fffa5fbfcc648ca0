// The transmission phase (proto.md "Transmission"): one reader coroutine takes request headers
// (and a write's payload) off the stream, checks them (check_request) and starts one handler
// coroutine per request, so many requests are in flight at once; each handler sends its whole
// reply under the connection's write lock, so replies never interleave.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "img/bytes.h"
#include "img/ops.h"
#include "nbd/buffer_pool.h"
#include "nbd/proto.h"
#include "nbd/session.h"
#include "util/async.h"

namespace img::nbd {

namespace {

// At most this many extents in one block status chunk: a client asking about a whole fragmented
// disk gets a prefix and asks again (proto.md lets the server answer fewer than asked).
constexpr size_t kMaxExtents = 16384;

// The free buffers one connection keeps for its next requests (buffer_pool.h): enough for a
// client that keeps kMaxInFlight 256 KiB requests going, as nbdcopy does.
constexpr size_t kKeptBuffers = kMaxInFlight;
constexpr size_t kKeptBufferBytes = 16u << 20;

class Transmission {
 public:
  Transmission(IoLoop& loop, Conn& conn, const ExportConfig& exp, const Negotiated& neg)
      : loop_(loop),
        conn_(conn),
        exp_(exp),
        neg_(neg),
        wmu_(loop),
        changed_(loop),
        pool_(kKeptBuffers, kKeptBufferBytes) {
    limits_ = {exp.driver->size(), neg.tx_flags, neg.structured,
               neg.base_allocation || neg.allocation_depth};
  }

  Task<Status> run();

 private:
  Task<void> handle(Request r, Buffer payload);
  Task<Status> do_read(const Request& r);
  Task<Status> do_block_status(const Request& r);
  Task<Result<uint32_t>> do_command(const Request& r, const Buffer& payload);
  Task<Status> send(std::span<const iovec> iov);
  Task<Status> send_error(const Request& r, uint32_t error, std::string_view msg);
  Task<Status> send_ok(const Request& r);
  void finished(uint64_t bytes) {
    --in_flight_;
    bytes_in_flight_ -= bytes;
    changed_.notify_all();
  }

  IoLoop& loop_;
  Conn& conn_;
  const ExportConfig& exp_;
  Negotiated neg_;
  ExportLimits limits_;
  AsyncMutex wmu_;
  WaitList changed_;  // a handler finished
  BufferPool pool_;   // outlives every handler: run() returns only once all have finished
  unsigned in_flight_ = 0;
  uint64_t bytes_in_flight_ = 0;
  bool dead_ = false;  // a reply could not be sent: the stream is gone
};

// What a request costs in buffers while it is in flight.
uint64_t buffer_cost(const Request& r) {
  return r.type == kCmdRead || r.type == kCmdWrite ? r.length : 0;
}

Task<Status> Transmission::run() {
  Status result;
  uint8_t hb[kRequestSize];
  while (!dead_) {
    while (!dead_ && (in_flight_ >= kMaxInFlight || bytes_in_flight_ > kMaxBytesInFlight)) {
      co_await changed_.wait();
    }
    if (dead_) break;
    auto st = co_await conn_.read_exact(hb, sizeof hb);
    if (!st) {
      result = std::move(st);
      break;
    }
    Request r = decode_request(hb);
    Check c = check_request(r, limits_);
    if (c.verdict == Verdict::kDisconnect) {
      result = invalid_argument(c.why);
      break;
    }
    Buffer payload;
    if (uint32_t n = payload_length(r); n > 0) {
      // Bounded by kMaxPayload (check_request) and by the wait above. A refused write's data is
      // read all the same, to find the next request.
      payload = pool_.get(n);
      auto pst = co_await conn_.read_exact(payload.data(), n);
      if (!pst) {
        result = std::move(pst);
        break;
      }
    }
    if (c.verdict == Verdict::kError) {
      auto est = co_await send_error(r, c.error, c.why);
      if (!est) break;
      continue;
    }
    if (r.type == kCmdDisc) break;  // "NBD_CMD_DISC": finish what is in flight, then close
    ++in_flight_;
    bytes_in_flight_ += buffer_cost(r);
    loop_.spawn(handle(r, std::move(payload)));
  }
  while (in_flight_ > 0) co_await changed_.wait();
  co_return result;
}

Task<void> Transmission::handle(Request r, Buffer payload) {
  uint64_t cost = buffer_cost(r);
  if (r.type == kCmdRead) {
    (void)co_await do_read(r);
  } else if (r.type == kCmdBlockStatus) {
    (void)co_await do_block_status(r);
  } else {
    auto res = co_await do_command(r, payload);
    payload = {};
    if (res && *res == 0) {
      (void)co_await send_ok(r);
    } else {
      std::string msg = res ? "" : res.error().to_string();
      (void)co_await send_error(r, res ? *res : wire_error(res.error()), msg);
    }
  }
  finished(cost);
}

Task<Status> Transmission::send(std::span<const iovec> iov) {
  auto guard = co_await wmu_.lock();
  if (dead_) co_return io_error(EPIPE, "sending a reply");
  auto st = co_await conn_.write_all(iov);
  if (!st) {
    dead_ = true;
    conn_.close();  // wakes the reader
    changed_.notify_all();
  }
  co_return st;
}

Task<Status> Transmission::send_ok(const Request& r) {
  uint8_t b[kSimpleReplySize];
  encode_simple_reply(b, 0, r.cookie);
  iovec iov{b, sizeof b};
  co_return co_await send({&iov, 1});
}

// Structured: an NBD_REPLY_TYPE_ERROR chunk with the message; simple: the error value alone.
Task<Status> Transmission::send_error(const Request& r, uint32_t error, std::string_view msg) {
  if (!neg_.structured) {
    uint8_t b[kSimpleReplySize];
    encode_simple_reply(b, error, r.cookie);
    iovec iov{b, sizeof b};
    co_return co_await send({&iov, 1});
  }
  msg = msg.substr(0, kMaxString);
  uint8_t b[kChunkHeaderSize + 6];
  encode_chunk_header(b, kReplyFlagDone, kReplyError, r.cookie, 6 + msg.size());
  store_be32(b + kChunkHeaderSize, error);
  store_be16(b + kChunkHeaderSize + 4, static_cast<uint16_t>(msg.size()));
  iovec iov[2] = {{b, sizeof b}, {const_cast<char*>(msg.data()), msg.size()}};
  co_return co_await send(iov);
}

// Runs that read as zeros go out as NBD_REPLY_TYPE_OFFSET_HOLE chunks, the rest as OFFSET_DATA
// (proto.md "NBD_CMD_READ"), unless the client asked for one piece (DF) or simple replies.
Task<Status> Transmission::do_read(const Request& r) {
  Buffer buf = pool_.get(r.length);
  if (r.length > 0) {
    auto st = co_await exp_.driver->read(r.offset, buf.data(), r.length);
    if (!st) co_return co_await send_error(r, wire_error(st.error()), st.error().to_string());
  }
  if (!neg_.structured) {
    uint8_t b[kSimpleReplySize];
    encode_simple_reply(b, 0, r.cookie);
    iovec iov[2] = {{b, sizeof b}, {buf.data(), buf.size()}};
    co_return co_await send(iov);
  }
  struct Piece {
    uint64_t off;
    uint32_t len;
    bool hole;
  };
  std::vector<Piece> pieces;
  if (r.length == 0 || (r.flags & kCmdFlagDf)) {
    pieces.push_back({r.offset, r.length, false});
  } else {
    for (uint64_t off = r.offset, end = r.offset + r.length; off < end;) {
      auto st = co_await exp_.status(off, end - off);
      if (!st) co_return co_await send_error(r, wire_error(st.error()), st.error().to_string());
      uint64_t n = std::min(st->length, end - off);
      if (n == 0) n = end - off;  // a status source that makes no progress: send the rest as data
      bool hole = st->zero;
      if (!pieces.empty() && pieces.back().hole == hole) {
        pieces.back().len += static_cast<uint32_t>(n);
      } else {
        pieces.push_back({off, static_cast<uint32_t>(n), hole});
      }
      off += n;
    }
  }
  // One 28-byte header (chunk header + offset) per piece; a hole's header carries its length.
  std::vector<uint8_t> hdrs(pieces.size() * (kChunkHeaderSize + 12));
  std::vector<iovec> iov;
  iov.reserve(pieces.size() * 2);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    uint8_t* h = hdrs.data() + i * (kChunkHeaderSize + 12);
    uint16_t flags = i + 1 == pieces.size() ? kReplyFlagDone : 0;
    if (p.hole) {
      encode_chunk_header(h, flags, kReplyOffsetHole, r.cookie, 12);
      store_be64(h + kChunkHeaderSize, p.off);
      store_be32(h + kChunkHeaderSize + 8, p.len);
      iov.push_back({h, kChunkHeaderSize + 12});
    } else {
      encode_chunk_header(h, flags, kReplyOffsetData, r.cookie, 8 + p.len);
      store_be64(h + kChunkHeaderSize, p.off);
      iov.push_back({h, kChunkHeaderSize + 8});
      if (p.len) iov.push_back({buf.data() + (p.off - r.offset), p.len});
    }
  }
  co_return co_await send(iov);
}

// One NBD_REPLY_TYPE_BLOCK_STATUS chunk per selected context (proto.md "NBD_CMD_BLOCK_STATUS"),
// from one walk of the chain: base:allocation says hole/zero, qemu:allocation-depth which
// image of the chain holds the range (0: none, 1: the top image, 2: its backing file...).
Task<Status> Transmission::do_block_status(const Request& r) {
  std::vector<Extent> base, depth;
  auto add = [](std::vector<Extent>& v, uint32_t len, uint32_t flags) {
    if (!v.empty() && v.back().flags == flags) {
      v.back().length += len;
    } else {
      v.push_back({len, flags});
    }
  };
  bool one = r.flags & kCmdFlagReqOne;
  for (uint64_t off = r.offset, end = r.offset + r.length; off < end;) {
    auto st = co_await exp_.status(off, end - off);
    if (!st) co_return co_await send_error(r, wire_error(st.error()), st.error().to_string());
    uint32_t n = static_cast<uint32_t>(std::min(st->length, end - off));
    if (n == 0) n = static_cast<uint32_t>(end - off);
    add(base, n, (st->data ? 0 : kStateHole) | (st->zero ? kStateZero : 0));
    add(depth, n, st->allocated ? st->depth + 1 : 0);
    off += n;
    // With REQ_ONE only the first extent goes out, so the walk may stop once it is complete.
    if ((one && base.size() > 1 && depth.size() > 1) || base.size() > kMaxExtents ||
        depth.size() > kMaxExtents) {
      break;
    }
  }
  auto trim = [&](std::vector<Extent>& v) {
    size_t keep = one ? 1 : kMaxExtents;
    if (v.size() > keep) v.resize(keep);
  };
  trim(base);
  trim(depth);
  struct Ctx {
    uint32_t id;
    std::vector<Extent>* ext;
  };
  std::vector<Ctx> ctxs;
  if (neg_.base_allocation) ctxs.push_back({kContextIdBase, &base});
  if (neg_.allocation_depth) ctxs.push_back({kContextIdDepth, &depth});
  std::vector<std::vector<uint8_t>> chunks;
  std::vector<iovec> iov;
  for (size_t i = 0; i < ctxs.size(); ++i) {
    const auto& ext = *ctxs[i].ext;
    std::vector<uint8_t> c(kChunkHeaderSize + 4 + ext.size() * 8);
    encode_chunk_header(c.data(), i + 1 == ctxs.size() ? kReplyFlagDone : 0, kReplyBlockStatus,
                        r.cookie, static_cast<uint32_t>(4 + ext.size() * 8));
    store_be32(c.data() + kChunkHeaderSize, ctxs[i].id);
    for (size_t j = 0; j < ext.size(); ++j) {
      store_be32(c.data() + kChunkHeaderSize + 4 + j * 8, ext[j].length);
      store_be32(c.data() + kChunkHeaderSize + 8 + j * 8, ext[j].flags);
    }
    chunks.push_back(std::move(c));
  }
  for (auto& c : chunks) iov.push_back({c.data(), c.size()});
  co_return co_await send(iov);
}

// The commands answered with a plain ok or error: an NBD error value, 0 for success.
Task<Result<uint32_t>> Transmission::do_command(const Request& r, const Buffer& payload) {
  BlockDriver& d = *exp_.driver;
  bool fua = r.flags & kCmdFlagFua;
  switch (r.type) {
    case kCmdWrite: {
      if (r.length == 0) break;
      if (exp_.detect_zeroes != DetectZeroes::kOff && is_zero(payload.data(), payload.size())) {
        bool unmap = exp_.detect_zeroes == DetectZeroes::kUnmap && exp_.discard_unmap;
        CO_RETURN_IF_ERROR(co_await d.write_zeroes(r.offset, r.length, {.may_unmap = unmap}));
      } else {
        CO_RETURN_IF_ERROR(co_await d.write(r.offset, payload.data(), r.length));
      }
      break;
    }
    case kCmdFlush:
      CO_RETURN_IF_ERROR(co_await d.flush());
      co_return 0u;
    case kCmdTrim:
      // --discard=ignore (qemu-nbd's default) answers success and keeps the data: TRIM is
      // advisory.
      if (r.length == 0 || !exp_.discard_unmap) break;
      CO_RETURN_IF_ERROR(co_await d.discard(r.offset, r.length));
      break;
    case kCmdWriteZeroes: {
      if (r.length == 0) break;
      // Zeroing is fast when it changes metadata only: a raw file's fallocate, whole clusters
      // of a version 3 qcow2 (BlockDriver::zeroes_without_writing).
      if ((r.flags & kCmdFlagFastZero) && !d.zeroes_without_writing(r.offset, r.length)) {
        co_return kEnotsup;  // "NBD_CMD_FLAG_FAST_ZERO": fail fast rather than write zeros
      }
      bool unmap = !(r.flags & kCmdFlagNoHole) && exp_.discard_unmap;
      CO_RETURN_IF_ERROR(co_await d.write_zeroes(r.offset, r.length, {.may_unmap = unmap}));
      break;
    }
    case kCmdCache: {
      // A prefetch: read the range (in bounded pieces) so later reads find it cached.
      constexpr uint64_t kPiece = 1 << 20;
      std::vector<uint8_t> scratch(std::min<uint64_t>(kPiece, r.length));
      for (uint64_t off = r.offset, end = r.offset + r.length; off < end; off += kPiece) {
        CO_RETURN_IF_ERROR(co_await d.read(off, scratch.data(), std::min(kPiece, end - off)));
      }
      co_return 0u;
    }
    default:
      co_return kEinval;
  }
  if (fua) CO_RETURN_IF_ERROR(co_await d.flush());
  co_return 0u;
}

}  // namespace

Task<Status> transmit(IoLoop& loop, Conn& conn, const ExportConfig& exp, const Negotiated& neg) {
  Transmission t(loop, conn, exp, neg);
  co_return co_await t.run();
}

Task<Status> serve_client(IoLoop& loop, Conn& conn, const ExportConfig& exp) {
  CO_ASSIGN_OR_RETURN(Negotiated neg, co_await negotiate(conn, exp));
  if (neg.aborted) co_return Status{};
  co_return co_await transmit(loop, conn, exp, neg);
}

}  // namespace img::nbd
