// L1/L2 lookup and L2 table allocation (qcow2.rst "Cluster mapping"), and the check that guest
// data never lands on metadata.
#include "qcow2/driver.h"

namespace img::qcow2 {

Result<uint64_t> Qcow2Image::l2_offset_from_l1(uint64_t idx) const {
  if (idx >= l1_.size()) {
    return corruption(strfmt("%s: L1 index %llu is past the L1 table (%zu entries)",
                             file_->name().c_str(), (unsigned long long)idx, l1_.size()));
  }
  uint64_t e = l1_[idx];
  if (e & kL1ReservedMask) {
    return corruption(strfmt("%s: L1 entry %llu (0x%llx) has reserved bits set",
                             file_->name().c_str(), (unsigned long long)idx,
                             (unsigned long long)e));
  }
  uint64_t off = e & kL1OffsetMask;
  if (off != 0 && (!is_aligned(off, cluster_size_) || off < cluster_size_)) {
    return corruption(strfmt("%s: L2 table offset 0x%llx (L1 index %llu) is not a valid cluster "
                             "offset",
                             file_->name().c_str(), (unsigned long long)off,
                             (unsigned long long)idx));
  }
  return off;
}

Result<L2Entry> Qcow2Image::decode_entry(uint64_t gc, RawL2 r) const {
  const uint64_t raw = r.entry;
  L2Decoded d = decode_l2(raw, cluster_bits_, h_.version, extended_, r.bitmap, has_data_file());
  if (has_data_file() && d.entry.kind == ClusterKind::kCompressed) {
    // QEMU's qcow2_get_host_offset: "Compressed cluster entry found in image with external data
    // file".
    return corruption(strfmt(
        "%s: L2 entry for guest offset 0x%llx (0x%llx) is a compressed "
        "cluster in an image with an external data file",
        file_->name().c_str(), (unsigned long long)(gc << cluster_bits_), (unsigned long long)raw));
  }
  switch (d.defect) {
    case L2Defect::kNone:
      break;
    case L2Defect::kReservedBits:
      return corruption(strfmt("%s: L2 entry for guest offset 0x%llx (0x%llx) has reserved bits "
                               "set",
                               file_->name().c_str(), (unsigned long long)(gc << cluster_bits_),
                               (unsigned long long)raw));
    case L2Defect::kUnaligned:
      return corruption(strfmt("%s: data cluster offset 0x%llx for guest offset 0x%llx is not "
                               "cluster aligned",
                               file_->name().c_str(), (unsigned long long)d.entry.host_offset,
                               (unsigned long long)(gc << cluster_bits_)));
    case L2Defect::kAllocAndZero:
    case L2Defect::kUnallocatedAlloc:
    case L2Defect::kCompressedBitmap:
      // QEMU's qcow2_get_subcluster_type() calls the first two invalid (and reading them
      // fails); the spec reserves the bitmap of a compressed cluster ("set to 0").
      return corruption(strfmt(
          "%s: extended L2 entry for guest offset 0x%llx (0x%llx, bitmap 0x%016llx) is invalid: %s",
          file_->name().c_str(), (unsigned long long)(gc << cluster_bits_), (unsigned long long)raw,
          (unsigned long long)r.bitmap,
          d.defect == L2Defect::kAllocAndZero ? "a subcluster is both allocated and zero"
          : d.defect == L2Defect::kUnallocatedAlloc
              ? "allocated subclusters without a host cluster"
              : "a compressed cluster with a subcluster bitmap"));
  }
  return d.entry;
}

Status Qcow2Image::compressed_not_supported(uint64_t gc) const {
  return not_supported(strfmt("%s: guest offset 0x%llx is a compressed cluster; compressed "
                              "clusters are not supported yet",
                              file_->name().c_str(), (unsigned long long)(gc << cluster_bits_)));
}

bool Qcow2Image::overlaps_metadata(uint64_t off, uint64_t len) const {
  auto hits = [&](uint64_t a, uint64_t n) { return n > 0 && off < a + n && a < off + len; };
  if (hits(0, cluster_size_)) return true;
  if (hits(h_.l1_table_offset, uint64_t(h_.l1_size) * 8)) return true;
  if (hits(h_.refcount_table_offset, uint64_t(h_.refcount_table_clusters) * cluster_size_)) {
    return true;
  }
  for (uint64_t c = off >> cluster_bits_; c <= (off + len - 1) >> cluster_bits_; ++c) {
    if (metadata_clusters_.count(c)) return true;
  }
  return false;
}

Task<Status> Qcow2Image::lookup(uint64_t first, uint64_t count, std::vector<RawL2>& entries) {
  entries.assign(count, RawL2{});
  CO_ASSIGN_OR_RETURN(auto ref, co_await get_l2(l1_index(first), false));
  if (!ref) co_return Status{};
  const uint8_t* t = ref.data();
  uint64_t i0 = l2_index(first);
  for (uint64_t k = 0; k < count; ++k) entries[k] = load_l2(t, i0 + k, l2_entry_bytes_);
  co_return Status{};
}

Task<Result<TableCache::Ref>> Qcow2Image::get_l2(uint64_t l1i, bool allocate) {
  for (;;) {
    CO_ASSIGN_OR_RETURN(uint64_t off, l2_offset_from_l1(l1i));
    // A table shared with a snapshot (no COPIED in its L1 entry) is copied before a writer
    // changes it; readers use it as it is.
    if (off != 0 && (!allocate || (l1_[l1i] & kOflagCopied))) {
      co_return co_await l2_cache_->get(off);
    }
    if (!allocate) co_return TableCache::Ref();
    auto it = l2_allocating_.find(l1i);
    if (it != l2_allocating_.end()) {
      co_await it->second->wait();
      continue;
    }
    l2_allocating_.emplace(l1i, std::make_unique<WaitList>(loop_));
    // (Two statements: GCC 12 mis-destroys temporaries of co_await inside ?:.)
    Status s;
    if (off) {
      s = co_await l2_copy(l1i, off);
    } else {
      s = co_await l2_allocate(l1i);
    }
    auto node = l2_allocating_.extract(l1i);
    node.mapped()->notify_all();
    CO_RETURN_IF_ERROR(s);
  }
}

Task<Status> Qcow2Image::l2_allocate(uint64_t l1i) {
  uint64_t off;
  {
    auto guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(off, co_await alloc_clusters(1));
  }
  metadata_clusters_.insert(off >> cluster_bits_);
  // The new table (all zeros) and its refcount reach the disk before the L1 entry points at it.
  std::vector<uint8_t> zeros(cluster_size_, 0);
  CO_RETURN_IF_ERROR(co_await file_->write(off, zeros.data(), zeros.size()));
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  uint64_t entry = off | kOflagCopied;
  uint8_t e[8];
  store_be64(e, entry);
  CO_RETURN_IF_ERROR(co_await file_->write(h_.l1_table_offset + l1i * 8, e, 8));
  l1_[l1i] = entry;
  co_return Status{};
}

Task<Status> Qcow2Image::l2_copy(uint64_t l1i, uint64_t old_off) {
  // As l2_allocate, with the shared table's entries as the content. Their data clusters keep
  // their refcounts (each is still reached once through the active L1 and once through the
  // snapshot's), and their COPIED flags (clear: the refcounts are above one).
  std::vector<uint8_t> copy(cluster_size_);
  {
    CO_ASSIGN_OR_RETURN(auto old, co_await l2_cache_->get(old_off));
    std::copy_n(old.data(), cluster_size_, copy.data());
  }
  uint64_t off;
  {
    auto guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(off, co_await alloc_clusters(1));
  }
  metadata_clusters_.insert(off >> cluster_bits_);
  CO_RETURN_IF_ERROR(co_await file_->write(off, copy.data(), copy.size()));
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  uint64_t entry = off | kOflagCopied;
  uint8_t e[8];
  store_be64(e, entry);
  CO_RETURN_IF_ERROR(co_await file_->write(h_.l1_table_offset + l1i * 8, e, 8));
  // The old table loses the active L1's reference only once the new entry is durable: its
  // refcount must never fall below the references on disk.
  CO_RETURN_IF_ERROR(co_await file_->flush());
  l1_[l1i] = entry;
  auto guard = co_await alloc_mu_.lock();
  co_return co_await update_refcounts(old_off >> cluster_bits_, 1, -1);
}

}  // namespace img::qcow2
