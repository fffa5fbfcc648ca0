// Whole-image metadata passes for snapshots (create, apply, delete touch every L2 table and
// every data cluster an L1 table reaches): QEMU's qcow2_update_snapshot_refcount goes through
// its caches one cluster at a time, which stops scaling once the caches no longer hold the
// metadata (a 1 TiB image has 128 MiB of L2 tables and 32 MiB of refcount blocks). Here:
//   - L2Stream reads the L2 tables of an L1 table in large sequential batches (sorted by host
//     offset, contiguous tables in one read) and writes back only the changed ones, coalesced;
//   - RefcountBatch holds the refcount blocks a pass touches in memory, loaded in coalesced
//     reads before the batch that needs them, updated in place, each written once at the end.
// Both bypass the driver's TableCache, so the caller drops the caches first (nothing dirty,
// nothing pinned) and no request runs meanwhile.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "img/bytes.h"
#include "img/file.h"
#include "img/status.h"
#include "img/task.h"
#include "qcow2/format.h"

namespace img::qcow2 {

class RefcountBatch {
 public:
  RefcountBatch(File& f, const std::vector<uint64_t>& reftable, uint32_t cluster_bits,
                uint32_t refcount_order);

  // Loads the refcount blocks of clusters (any order, duplicates fine) that are not loaded yet.
  // A cluster without a refcount block is an error: every cluster a table references has a
  // refcount of at least one.
  Task<Status> load(const std::vector<uint64_t>& clusters);
  // The same by refcount block index (refcount table index), as block_index() gives them.
  Task<Status> load_blocks(std::vector<uint64_t> blocks);
  uint64_t block_index(uint64_t c) const { return c >> per_block_bits_; }
  bool block_loaded(uint64_t b) const { return b < by_index_.size() && by_index_[b] != nullptr; }
  // Block b's refcounts (refcount_order-wide entries) if loaded, else null: for loops that read
  // many neighbouring refcounts (entry c & (entries_per_block() - 1) of block_index(c)).
  const uint8_t* block_data(uint64_t b) const {
    return block_loaded(b) ? by_index_[b]->data.get() : nullptr;
  }
  uint64_t entries_per_block() const { return per_block_; }
  // REQUIRES: c's block loaded. Errors (never changing anything) on underflow or overflow.
  // Inline: the passes call these once per mapped cluster (16 M times on a 1 TiB image).
  [[gnu::always_inline]] Status add(uint64_t c, int64_t delta) {
    Block* b = block_of(c);
    const uint64_t i = c & (per_block_ - 1);
    const uint64_t v = get_refcount(b->data.get(), i, order_);
    if ((delta < 0 && v < uint64_t(-delta)) || (delta > 0 && max_ - v < uint64_t(delta))) {
      return out_of_range(c, delta);
    }
    set_refcount(b->data.get(), i, order_, v + delta);
    b->dirty = true;
    if (v + delta == 0 && c < lowest_freed_) lowest_freed_ = c;
    return {};
  }
  // add(c + k, delta) for every k < n, in a tight loop per refcount block: the passes merge the
  // contiguous host clusters of a table into one run (a preallocated image maps 8192 of them
  // per table). All or nothing: an underflow or overflow anywhere in the run changes nothing.
  // REQUIRES: the blocks of the whole run loaded; n > 0.
  Status add_run(uint64_t c, uint64_t n, int64_t delta);
  // REQUIRES: c's block loaded.
  [[gnu::always_inline]] uint64_t get(uint64_t c) const {
    return get_refcount(block_of(c)->data.get(), c & (per_block_ - 1), order_);
  }
  [[gnu::always_inline]] bool loaded(uint64_t c) const { return block_of(c) != nullptr; }
  // Writes every changed block (contiguous blocks in one write); does not flush.
  Task<Status> write_dirty();
  // Memory held by loaded blocks; a pass spills (write_dirty + drop) above a bound.
  uint64_t bytes_held() const { return held_.size() * cs_; }
  void drop();
  // The lowest cluster whose refcount reached 0 (UINT64_MAX if none).
  uint64_t lowest_freed() const { return lowest_freed_; }

 private:
  struct Block {
    uint64_t index;
    uint64_t offset;
    std::unique_ptr<uint8_t[]> data;
    bool dirty = false;
  };
  // The passes visit clusters mostly in order: the last block found answers again.
  [[gnu::always_inline]] Block* block_of(uint64_t c) const {
    const uint64_t b = c >> per_block_bits_;
    if (b == last_index_ && last_block_) return last_block_;
    Block* blk = b < by_index_.size() ? by_index_[b] : nullptr;
    last_index_ = b;
    last_block_ = blk;
    return blk;
  }
  Status out_of_range(uint64_t c, int64_t delta) const;
  template <uint32_t Order>
  Status add_run_as(uint64_t c, uint64_t n, int64_t delta);

  File& f_;
  const std::vector<uint64_t>& reftable_;
  uint32_t cluster_bits_;
  uint64_t cs_;
  uint32_t order_;
  uint64_t per_block_;
  uint32_t per_block_bits_;
  uint64_t max_;
  std::vector<std::unique_ptr<Block>> held_;
  std::vector<Block*> by_index_;  // refcount table index -> loaded block (or null)
  mutable uint64_t last_index_ = UINT64_MAX;
  mutable Block* last_block_ = nullptr;  // by_index_[last_index_] when last looked up
  uint64_t lowest_freed_ = UINT64_MAX;
};

// An L1 table (host-endian entries) as it is stored: big-endian, 8 bytes an entry.
inline std::vector<uint8_t> encode_l1(const std::vector<uint64_t>& l1) {
  std::vector<uint8_t> raw(l1.size() * 8);
  for (size_t i = 0; i < l1.size(); ++i) store_be64(&raw[i * 8], l1[i]);
  return raw;
}

class L2Stream {
 public:
  // The L2 tables that l1 (host-endian entries) names, read in batches of about batch_bytes.
  // Entries with reserved bits or an invalid offset are errors, found before any read.
  static Result<L2Stream> make(File& f, const std::vector<uint64_t>& l1, uint64_t cluster_size,
                               uint64_t file_size, uint64_t batch_bytes = 16ull << 20);

  // Reads the next batch into the other of two buffers, so the batch before stays intact for a
  // write_changed(slot) that may run meanwhile (writing back is the caller's job). Returns false
  // when every table was visited.
  Task<Result<bool>> next();
  // The buffer the current batch is in.
  int slot() const { return cur_; }
  size_t size() const { return cur().end - cur().begin; }
  uint64_t offset(size_t i) const { return items_[cur().begin + i].offset; }
  // How many L1 entries name this table (more than one only in odd or hostile images).
  uint32_t refs(size_t i) const { return items_[cur().begin + i].refs; }
  uint8_t* table(size_t i) { return slots_[cur_].buf.data() + i * cs_; }
  void mark_changed(size_t i) { items_[cur().begin + i].changed = true; }
  // Writes the changed tables of the batch in buffer slot (coalesced).
  Task<Status> write_changed(int slot);
  Task<Status> write_changed() { return write_changed(cur_); }

 private:
  struct Item {
    uint64_t offset;
    uint32_t refs;
    bool changed;
  };
  struct Slot {
    std::vector<uint8_t> buf;
    size_t begin = 0, end = 0;  // the batch's items
  };
  L2Stream(File& f, uint64_t cs, uint64_t batch_tables) : f_(&f), cs_(cs), batch_(batch_tables) {}
  const Slot& cur() const { return slots_[cur_]; }

  File* f_;
  uint64_t cs_;
  uint64_t batch_;
  std::vector<Item> items_;  // sorted by offset, unique
  size_t next_ = 0;          // the first item of the next batch
  Slot slots_[2];
  int cur_ = 0;
};

}  // namespace img::qcow2
