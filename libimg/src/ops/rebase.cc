// rebase_copy: qemu-img rebase's safe mode (qemu-img.c img_rebase): for every range the overlay
// does not hold itself, the old backing chain and the new one are read and compared, and the
// sectors where they differ get the old content written into the overlay, so that what the
// guest sees does not change when the header names the new backing file.
#include <algorithm>
#include <cstring>
#include <vector>

#include "img/ops.h"

namespace img {
namespace {

constexpr uint64_t kChunk = 2 << 20;  // qemu-img rebase's IO_BUF_SIZE
constexpr uint64_t kSector = 512;     // the unit qemu-img's compare_buffers works in

struct ZeroRun {
  bool zero = false;
  uint64_t length = 0;
};

// Whether [off, off+len) of the chain from d down reads as zeros, for how long from off. Walks
// down through the ranges an image leaves to its backing file; nullptr reads as zeros.
Task<Result<ZeroRun>> chain_zero_run(BlockDriver* d, uint64_t off, uint64_t len) {
  while (d != nullptr) {
    if (off >= d->size()) break;  // past this image's end: zeros
    len = std::min(len, d->size() - off);
    auto st = co_await d->block_status(off, len);
    if (!st) co_return Unexpected(std::move(st).error());
    if (st->kind != BlockStatus::Kind::kBacking) {
      co_return ZeroRun{st->reads_as_zero(), st->length};
    }
    len = st->length;
    d = d->backing();
  }
  co_return ZeroRun{true, len};
}

// Reads [off, off+len) of d into buf, zeros past its end (or everywhere when d is nullptr).
Task<Status> read_or_zeros(BlockDriver* d, uint64_t off, uint8_t* buf, uint64_t len) {
  uint64_t have = d == nullptr || off >= d->size() ? 0 : std::min(len, d->size() - off);
  if (have > 0) CO_RETURN_IF_ERROR(co_await d->read(off, buf, have));
  std::memset(buf + have, 0, len - have);
  co_return Status{};
}

// Compares one chunk of both chains and writes the differing sectors of the old one into top.
Task<Status> copy_differences(BlockDriver& top, BlockDriver* old_chain, BlockDriver* new_chain,
                              uint64_t off, uint64_t len, std::vector<uint8_t>& old_buf,
                              std::vector<uint8_t>& new_buf, RebaseStats& stats) {
  CO_RETURN_IF_ERROR(co_await read_or_zeros(old_chain, off, old_buf.data(), len));
  CO_RETURN_IF_ERROR(co_await read_or_zeros(new_chain, off, new_buf.data(), len));
  stats.bytes_compared += len;
  uint64_t pos = 0;
  while (pos < len) {
    auto same = [&](uint64_t p) {
      uint64_t n = std::min(kSector, len - p);
      return std::memcmp(old_buf.data() + p, new_buf.data() + p, n) == 0;
    };
    bool differ = !same(pos);
    uint64_t end = pos;
    while (end < len && same(end) != differ) end += std::min(kSector, len - end);
    if (differ) {
      CO_RETURN_IF_ERROR(co_await top.write(off + pos, old_buf.data() + pos, end - pos));
      stats.bytes_written += end - pos;
    }
    pos = end;
  }
  co_return Status{};
}

}  // namespace

Task<Result<RebaseStats>> rebase_copy(IoLoop& loop, BlockDriver& top, BlockDriver* new_backing,
                                      const std::function<void(uint64_t, uint64_t)>& progress) {
  (void)loop;
  if (top.read_only()) co_return read_only_error("rebase: the image is open read-only");
  RebaseStats stats;
  BlockDriver* old_chain = top.backing();
  const uint64_t size = top.size();
  std::vector<uint8_t> old_buf(kChunk), new_buf(kChunk);
  uint64_t off = 0;
  while (off < size) {
    auto st = co_await top.block_status(off, size - off);
    if (!st) co_return Unexpected(std::move(st).error());
    uint64_t run = st->length;
    // What top holds itself (data or zero clusters) hides both chains. kUnallocated (past the
    // old backing file's end) reads as zeros now and may not with the new one, so it is
    // compared like kBacking, as qemu-img's bdrv_is_allocated test treats it.
    bool held = st->kind == BlockStatus::Kind::kData || st->kind == BlockStatus::Kind::kZero;
    for (uint64_t at = off; !held && at < off + run;) {
      uint64_t n = std::min(off + run - at, kChunk);
      auto zo = co_await chain_zero_run(old_chain, at, n);
      if (!zo) co_return Unexpected(std::move(zo).error());
      auto zn = co_await chain_zero_run(new_backing, at, n);
      if (!zn) co_return Unexpected(std::move(zn).error());
      if (zo->zero && zn->zero) {
        at += std::min(zo->length, zn->length);
        continue;
      }
      CO_RETURN_IF_ERROR(
          co_await copy_differences(top, old_chain, new_backing, at, n, old_buf, new_buf, stats));
      at += n;
      if (progress) progress(at, size);
    }
    off += run;
    if (progress) progress(off, size);
  }
  CO_RETURN_IF_ERROR(co_await top.flush());
  co_return stats;
}

}  // namespace img
