// RefcountBatch and L2Stream (see refcount_batch.h). Spec: "Host cluster management",
// "Cluster mapping".
#include "qcow2/refcount_batch.h"

#include <algorithm>
#include <cinttypes>

#include "qcow2/format.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

namespace {
constexpr uint64_t kMaxRunBytes = 16ull << 20;  // one read or write of contiguous tables
constexpr size_t kMaxRunBlocks = 1024;          // and of refcount blocks: one iovec each (IOV_MAX)
}  // namespace

RefcountBatch::RefcountBatch(File& f, const std::vector<uint64_t>& reftable, uint32_t cluster_bits,
                             uint32_t order)
    : f_(f),
      reftable_(reftable),
      cluster_bits_(cluster_bits),
      cs_(1ull << cluster_bits),
      order_(order),
      per_block_(refcount_block_entries(cluster_bits, order)),
      per_block_bits_(cluster_bits + 3 - order),
      max_(max_refcount(order)),
      by_index_(reftable.size(), nullptr) {}

Task<Status> RefcountBatch::load(const std::vector<uint64_t>& clusters) {
  // Neighbouring clusters share a block: skip repeats of the last one, so what is sorted is
  // about one entry per block, not one per cluster.
  std::vector<uint64_t> need;
  uint64_t last = UINT64_MAX;
  for (uint64_t c : clusters) {
    uint64_t b = c / per_block_;
    if (b == last || (b < by_index_.size() && by_index_[b])) continue;
    last = b;
    need.push_back(b);
  }
  co_return co_await load_blocks(std::move(need));
}

Task<Status> RefcountBatch::load_blocks(std::vector<uint64_t> need) {
  std::sort(need.begin(), need.end());
  need.erase(std::unique(need.begin(), need.end()), need.end());
  std::vector<std::pair<uint64_t, uint64_t>> todo;  // (offset, block index), sorted by offset
  for (uint64_t b : need) {
    uint64_t off = b < reftable_.size() ? reftable_[b] & kRefTableOffsetMask : 0;
    if (off == 0) {
      co_return corruption(strfmt("%s: cluster %" PRIu64 " is referenced but has no refcount "
                                  "block (refcount table entry %" PRIu64 ")",
                                  f_.name().c_str(), b * per_block_, b));
    }
    if (!is_aligned(off, cs_) || off < cs_) {
      co_return corruption(strfmt("%s: refcount table entry %" PRIu64 " (0x%" PRIx64
                                  ") is not a valid cluster offset",
                                  f_.name().c_str(), b, off));
    }
    todo.push_back({off, b});
  }
  std::sort(todo.begin(), todo.end());
  todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
  // Contiguous blocks in one vectored read straight into their buffers.
  std::vector<std::unique_ptr<Block>> fresh;
  std::vector<iovec> iov;
  for (size_t i = 0; i < todo.size();) {
    size_t j = i + 1;
    while (j < todo.size() && todo[j].first == todo[j - 1].first + cs_ &&
           (j - i) * cs_ < kMaxRunBytes && j - i < kMaxRunBlocks) {
      ++j;
    }
    fresh.clear();
    iov.clear();
    for (size_t k = i; k < j; ++k) {
      auto blk = std::make_unique<Block>();
      blk->index = todo[k].second;
      blk->offset = todo[k].first;
      blk->data.reset(new uint8_t[cs_]);
      iov.push_back({blk->data.get(), cs_});
      fresh.push_back(std::move(blk));
    }
    CO_ASSIGN_OR_RETURN(uint64_t got, co_await f_.readv(todo[i].first, iov));
    if (got != (j - i) * cs_) {
      co_return corruption(strfmt("%s: short read of refcount blocks at 0x%" PRIx64,
                                  f_.name().c_str(), todo[i].first));
    }
    for (auto& blk : fresh) {
      by_index_[blk->index] = blk.get();
      held_.push_back(std::move(blk));
    }
    i = j;
  }
  co_return Status{};
}

Status RefcountBatch::out_of_range(uint64_t c, int64_t delta) const {
  if (delta < 0) {
    return corruption(
        strfmt("%s: refcount of cluster %" PRIu64 " would drop below zero", f_.name().c_str(), c));
  }
  return invalid_argument(strfmt("%s: refcount of cluster %" PRIu64 " would exceed %" PRIu64
                                 " (refcount_bits=%u)",
                                 f_.name().c_str(), c, max_, 1u << order_));
}

template <uint32_t Order>
Status RefcountBatch::add_run_as(uint64_t c, uint64_t n, int64_t delta) {
  // With Order a constant, get_refcount/set_refcount fold to one load or store each.
  const uint64_t end = c + n;
  const uint64_t d = delta < 0 ? uint64_t(-delta) : uint64_t(delta);
  for (uint64_t k = c; k < end;) {  // first every value checked, nothing changed
    const uint8_t* p = block_of(k)->data.get();
    const uint64_t i = k & (per_block_ - 1), m = std::min(end - k, per_block_ - i);
    for (uint64_t j = i; j < i + m; ++j) {
      const uint64_t v = get_refcount(p, j, Order);
      if (delta < 0 ? v < d : max_ - v < d) return out_of_range(k + (j - i), delta);
    }
    k += m;
  }
  for (uint64_t k = c; k < end;) {
    Block* b = block_of(k);
    uint8_t* p = b->data.get();
    const uint64_t i = k & (per_block_ - 1), m = std::min(end - k, per_block_ - i);
    for (uint64_t j = i; j < i + m; ++j) {
      const uint64_t v = get_refcount(p, j, Order) + uint64_t(delta);
      set_refcount(p, j, Order, v);
      if (v == 0 && k + (j - i) < lowest_freed_) lowest_freed_ = k + (j - i);
    }
    b->dirty = true;
    k += m;
  }
  return {};
}

Status RefcountBatch::add_run(uint64_t c, uint64_t n, int64_t delta) {
  if (n == 1) return add(c, delta);
  switch (order_) {
    case 0:
      return add_run_as<0>(c, n, delta);
    case 1:
      return add_run_as<1>(c, n, delta);
    case 2:
      return add_run_as<2>(c, n, delta);
    case 3:
      return add_run_as<3>(c, n, delta);
    case 4:
      return add_run_as<4>(c, n, delta);
    case 5:
      return add_run_as<5>(c, n, delta);
    default:
      return add_run_as<6>(c, n, delta);
  }
}

Task<Status> RefcountBatch::write_dirty() {
  std::vector<Block*> dirty;
  for (auto& b : held_) {
    if (b->dirty) dirty.push_back(b.get());
  }
  std::sort(dirty.begin(), dirty.end(), [](Block* a, Block* b) { return a->offset < b->offset; });
  std::vector<iovec> iov;
  for (size_t i = 0; i < dirty.size();) {
    size_t j = i + 1;
    while (j < dirty.size() && dirty[j]->offset == dirty[j - 1]->offset + cs_ &&
           (j - i) * cs_ < kMaxRunBytes && j - i < kMaxRunBlocks) {
      ++j;
    }
    iov.clear();
    for (size_t k = i; k < j; ++k) iov.push_back({dirty[k]->data.get(), cs_});
    CO_RETURN_IF_ERROR(co_await f_.writev(dirty[i]->offset, iov));
    for (size_t k = i; k < j; ++k) dirty[k]->dirty = false;
    i = j;
  }
  co_return Status{};
}

void RefcountBatch::drop() {
  for (auto& b : held_) by_index_[b->index] = nullptr;
  held_.clear();
  last_block_ = nullptr;
  last_index_ = UINT64_MAX;
}

Result<L2Stream> L2Stream::make(File& f, const std::vector<uint64_t>& l1, uint64_t cs,
                                uint64_t file_size, uint64_t batch_bytes) {
  L2Stream s(f, cs, std::max<uint64_t>(1, batch_bytes / cs));
  std::vector<uint64_t> offs;
  for (size_t i = 0; i < l1.size(); ++i) {
    if (l1[i] & kL1ReservedMask) {
      return corruption(strfmt("%s: L1 entry %zu (0x%" PRIx64 ") has reserved bits set",
                               f.name().c_str(), i, l1[i]));
    }
    uint64_t off = l1[i] & kL1OffsetMask;
    if (off == 0) continue;
    if (!is_aligned(off, cs) || off < cs || off > file_size - std::min(file_size, cs)) {
      return corruption(strfmt("%s: L2 table offset 0x%" PRIx64 " (L1 index %zu) is not a "
                               "valid cluster offset inside the file",
                               f.name().c_str(), off, i));
    }
    offs.push_back(off);
  }
  std::sort(offs.begin(), offs.end());
  for (uint64_t off : offs) {
    if (!s.items_.empty() && s.items_.back().offset == off) {
      ++s.items_.back().refs;
    } else {
      s.items_.push_back({off, 1, false});
    }
  }
  return s;
}

Task<Result<bool>> L2Stream::next() {
  if (next_ >= items_.size()) co_return false;
  cur_ ^= 1;
  Slot& s = slots_[cur_];
  s.begin = next_;
  s.end = next_ = std::min<size_t>(items_.size(), s.begin + batch_);
  s.buf.resize((s.end - s.begin) * cs_);
  for (size_t i = s.begin; i < s.end;) {
    size_t j = i + 1;
    while (j < s.end && items_[j].offset == items_[j - 1].offset + cs_ &&
           (j - i) * cs_ < kMaxRunBytes) {
      ++j;
    }
    CO_RETURN_IF_ERROR(co_await f_->read_exact(items_[i].offset, &s.buf[(i - s.begin) * cs_],
                                               (j - i) * cs_, "L2 tables"));
    i = j;
  }
  co_return true;
}

Task<Status> L2Stream::write_changed(int slot) {
  Slot& s = slots_[slot];
  for (size_t i = s.begin; i < s.end;) {
    if (!items_[i].changed) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < s.end && items_[j].changed && items_[j].offset == items_[j - 1].offset + cs_ &&
           (j - i) * cs_ < kMaxRunBytes) {
      ++j;
    }
    CO_RETURN_IF_ERROR(
        co_await f_->write(items_[i].offset, &s.buf[(i - s.begin) * cs_], (j - i) * cs_));
    for (size_t k = i; k < j; ++k) items_[k].changed = false;
    i = j;
  }
  co_return Status{};
}

}  // namespace img::qcow2
