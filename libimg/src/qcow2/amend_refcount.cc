// A new refcount width (qemu-img amend -o refcount_bits=N; QEMU's qcow2_change_refcount_order,
// block/qcow2-refcount.c). Spec: "Host cluster management": refcount_order in the header says
// the width of every refcount block entry, so the whole structure is rewritten.
//
// Crash safety: the new refcount blocks and table go to clusters past the end of the file,
// which nothing references and the old structure does not count; they are written and flushed
// first. The header write that names them (and the new order) is the commit point: before it
// the image is the old one with unreferenced space after it, after it the new one. The new
// counts already give the old blocks and table refcount 0, so they are free from the commit on
// (not discarded: QEMU leaves them too, with discard-other off by default).
#include <cinttypes>

#include "qcow2/driver.h"

namespace img::qcow2 {

namespace {
// New blocks are encoded and written this many at a time, to bound memory on big images.
constexpr uint64_t kBlocksPerWrite = 256;
}  // namespace

Task<Status> Qcow2Image::change_refcount_order(uint32_t order, const AmendProgress& progress) {
  CO_RETURN_IF_ERROR(co_await quiesce("amend"));
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  const uint64_t end = div_round_up(fsize, cluster_size_);  // clusters the file holds

  // The present refcounts of clusters [0, end): every cluster in use lies inside the file.
  std::vector<uint64_t> rc(end, 0);
  std::vector<uint8_t> block(cluster_size_);
  std::vector<uint64_t> old_structure;
  for (uint64_t t = 0; t < h_.refcount_table_clusters; ++t) {
    old_structure.push_back((h_.refcount_table_offset >> cluster_bits_) + t);
  }
  for (uint64_t b = 0; b < reftable_.size(); ++b) {
    const uint64_t off = reftable_[b] & kRefTableOffsetMask;
    if (off == 0) continue;
    CO_RETURN_IF_ERROR(check_refblock_offset(b, off));
    old_structure.push_back(off >> cluster_bits_);
    CO_RETURN_IF_ERROR(
        co_await file_->read_exact(off, block.data(), block.size(), "refcount block"));
    for (uint64_t i = 0; i < refblock_entries_; ++i) {
      const uint64_t v = get_refcount(block.data(), i, refcount_order_);
      if (v == 0) continue;
      const uint64_t c = b * refblock_entries_ + i;
      if (c >= end) {
        co_return corruption(strfmt("%s: cluster %" PRIu64 " past the end of the file has "
                                    "refcount %" PRIu64 " (run 'img check -r all' first)",
                                    file_->name().c_str(), c, v));
      }
      if (v > max_refcount(order)) {
        co_return invalid_argument(
            strfmt("Cannot decrease refcount entry width to %u bits: "
                   "Cluster at offset %#" PRIx64 " has a refcount of %" PRIu64,
                   1u << order, c << cluster_bits_, v));
      }
      rc[c] = v;
    }
    if (progress) progress(b + 1, 2 * reftable_.size());
  }
  // The old structure is free once the new one is in use.
  for (uint64_t c : old_structure) {
    if (c < end && rc[c] > 0) --rc[c];
  }

  Header nh = h_;
  nh.refcount_order = order;
  const RefcountStructure rs = refcount_structure_for(end, nh);
  if (rs.table_clusters * cluster_size_ > kMaxRefcountTableBytes) {
    co_return no_space("the refcount table for the new width would exceed 8 MiB");
  }
  const uint64_t per_block = refcount_block_entries(cluster_bits_, order);
  const uint64_t first_block = end, table_at = end + rs.blocks;
  rc.resize(table_at + rs.table_clusters, 0);
  for (uint64_t c = first_block; c < rc.size(); ++c) rc[c] = 1;

  // New blocks, in batches of contiguous clusters.
  for (uint64_t b = 0; b < rs.blocks; b += kBlocksPerWrite) {
    const uint64_t n = std::min(kBlocksPerWrite, rs.blocks - b);
    std::vector<uint8_t> out(n * cluster_size_, 0);
    for (uint64_t j = 0; j < n; ++j) {
      for (uint64_t i = 0; i < per_block; ++i) {
        const uint64_t c = (b + j) * per_block + i;
        if (c >= rc.size()) break;
        if (rc[c]) set_refcount(out.data() + j * cluster_size_, i, order, rc[c]);
      }
    }
    CO_RETURN_IF_ERROR(
        co_await file_->write((first_block + b) << cluster_bits_, out.data(), out.size()));
    if (progress)
      progress(reftable_.size() + b * reftable_.size() / rs.blocks, 2 * reftable_.size());
  }
  std::vector<uint64_t> table(rs.table_clusters * cluster_size_ / 8, 0);
  std::vector<uint8_t> raw(table.size() * 8);
  for (uint64_t b = 0; b < rs.blocks; ++b) {
    table[b] = (first_block + b) << cluster_bits_;
    store_be64(&raw[b * 8], table[b]);
  }
  CO_RETURN_IF_ERROR(co_await file_->write(table_at << cluster_bits_, raw.data(), raw.size()));
  CO_RETURN_IF_ERROR(co_await file_->flush());

  // Commit.
  nh.refcount_table_offset = table_at << cluster_bits_;
  nh.refcount_table_clusters = static_cast<uint32_t>(rs.table_clusters);
  CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(nh)));
  refcount_order_ = order;
  refblock_entries_ = per_block;
  reftable_ = std::move(table);
  free_cluster_index_ = 0;
  free_byte_offset_ = 0;
  freed_unsynced_.clear();
  refresh_metadata_clusters();
  if (progress) progress(1, 1);
  co_return Status{};
}

}  // namespace img::qcow2
