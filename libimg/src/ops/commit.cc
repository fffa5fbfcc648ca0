// commit: qemu-img commit's copy (QEMU block/commit.c and the mirror job qemu-img drives: every
// range allocated above the base is copied into it, zero ranges as zeros) on convert's run walk.
#include <memory>

#include "img/ops.h"

namespace img {
namespace {

// The images above base_depth of a chain, seen as one image whose ranges that none of them
// holds are kBacking: what convert leaves unwritten on a destination with a backing file.
// Reads go to the top driver; they are only made for ranges some image above base holds, so
// they never reach the chain's read-only copy of the base while the base is being written.
class AboveBase final : public BlockDriver {
 public:
  AboveBase(BlockDriver& top, unsigned depth) : top_(top), depth_(depth) {}

  uint64_t size() const override { return top_.size(); }
  bool read_only() const override { return true; }
  const char* format_name() const override { return top_.format_name(); }

  Task<Status> readv(uint64_t off, std::span<const iovec> iov) override {
    co_return co_await top_.readv(off, iov);
  }
  Task<Status> writev(uint64_t, std::span<const iovec>) override { co_return refused(); }
  Task<Status> flush() override { co_return Status{}; }
  Task<Status> discard(uint64_t, uint64_t) override { co_return refused(); }
  Task<Status> write_zeroes(uint64_t, uint64_t, WriteZeroesFlags) override { co_return refused(); }
  Task<Status> close() override { co_return Status{}; }

  Task<Result<BlockStatus>> block_status(uint64_t off, uint64_t len) override {
    BlockDriver* d = &top_;
    for (unsigned i = 0; i < depth_ && d != nullptr; ++i) {
      auto st = co_await d->block_status(off, len);
      if (!st) co_return st;
      // An image that holds the range (data or zeros), or one past its backing file's end
      // (kUnallocated: it reads as zeros there), answers for it.
      if (st->kind != BlockStatus::Kind::kBacking) co_return st;
      len = st->length;
      d = d->backing();
    }
    co_return BlockStatus{.kind = BlockStatus::Kind::kBacking, .length = len};
  }

 private:
  static Status refused() { return invalid_argument("commit: the source is read-only"); }
  BlockDriver& top_;
  unsigned depth_;
};

}  // namespace

Task<Result<ConvertStats>> commit(IoLoop& loop, BlockDriver& top, unsigned base_depth,
                                  BlockDriver& base, const ConvertOptions& opts) {
  unsigned below = 0;
  for (BlockDriver* d = top.backing(); d != nullptr; d = d->backing()) ++below;
  if (base_depth == 0 || base_depth > below) {
    co_return invalid_argument(
        strfmt("commit: base depth %u is not in the chain (%u backing images)", base_depth, below));
  }
  if (base.read_only()) co_return read_only_error("commit: the base image is open read-only");
  const uint64_t base_size = base.size();
  if (base_size < top.size()) {
    // As QEMU's commit job: the base grows to the top's size; the new part reads as zeros.
    CO_RETURN_IF_ERROR(co_await base.resize(top.size(), {}));
  }
  AboveBase src(top, base_depth);
  ConvertOptions c = opts;
  c.target_is_zero = false;
  c.target_has_backing = true;  // what no image above base holds stays as base has it
  c.target_backing_size = base_size;
  c.compress = false;
  c.copy_range = false;
  co_return co_await convert(loop, src, base, c);
}

}  // namespace img
