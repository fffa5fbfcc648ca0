// Zero clusters for a downgrade to compat 0.10 (QEMU's qcow2_expand_zero_clusters,
// block/qcow2-cluster.c): version 2 has no zero flag (spec: "Standard Cluster Descriptor", bit
// 0 is reserved before version 3), so every zero entry of every L1 table, the snapshots' too,
// becomes one that reads the same without it:
//   - zero, no host cluster, no backing file: unallocated (reads as zeros anyway);
//   - zero, no host cluster, over a backing file: a new cluster written with zeros, its
//     refcount one per L1 table that reaches the L2 table;
//   - zero with a host cluster kept allocated: zeros written into that cluster (refused where
//     a non-zero entry maps the same cluster: its data would be lost).
// Order per L2 table (a cut anywhere leaves leaked clusters at worst): new clusters are counted
// and their zeros written and flushed before the table that maps them is written.
#include <algorithm>
#include <cinttypes>
#include <unordered_map>

#include "qcow2/driver.h"

namespace img::qcow2 {

namespace {
// The L2 tables the L1 tables name, each once, in file order.
Result<std::vector<uint64_t>> l2_tables_of(const std::vector<std::vector<uint64_t>>& l1s,
                                           uint64_t cluster_size, uint64_t file_size) {
  std::vector<uint64_t> tables;
  for (const auto& l1 : l1s) {
    for (uint64_t e : l1) {
      uint64_t off = e & kL1OffsetMask;
      if (off == 0) continue;
      if ((e & kL1ReservedMask) || !is_aligned(off, cluster_size) || off < cluster_size ||
          off > file_size - std::min(file_size, cluster_size)) {
        return corruption(strfmt("L1 entry 0x%" PRIx64 " names no valid L2 table", e));
      }
      tables.push_back(off);
    }
  }
  std::sort(tables.begin(), tables.end());
  tables.erase(std::unique(tables.begin(), tables.end()), tables.end());
  return tables;
}
}  // namespace

Task<Status> Qcow2Image::expand_zero_clusters(const AmendProgress& progress) {
  CO_RETURN_IF_ERROR(co_await quiesce("amend"));
  std::vector<std::vector<uint64_t>> l1s{l1_};
  for (const SnapshotEntry& s : snapshots_) {
    CO_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, co_await load_snapshot_l1(s));
    l1s.push_back(std::move(l1));
  }
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  CO_ASSIGN_OR_RETURN(std::vector<uint64_t> tables, l2_tables_of(l1s, cluster_size_, fsize));

  std::vector<uint8_t> table(cluster_size_);
  // References that zero entries hold to each kept host cluster (one per L1 table reaching the
  // entry): zeros go in place only where every reference is a zero entry, so a snapshot whose
  // entry still maps data there keeps it.
  std::unordered_map<uint64_t, uint64_t> zero_refs;
  for (uint64_t toff : tables) {
    CO_RETURN_IF_ERROR(co_await file_->read_exact(toff, table.data(), table.size(), "L2 table"));
    uint64_t refs = 0;
    for (size_t i = 0; i < l2_entries_; ++i) {
      L2Decoded d = decode_l2(load_be64(&table[i * 8]), cluster_bits_, 3);
      if (d.entry.kind != ClusterKind::kZeroAlloc) continue;
      if (refs == 0) {
        auto guard = co_await alloc_mu_.lock();
        CO_ASSIGN_OR_RETURN(refs, co_await refcount_of(toff >> cluster_bits_));
      }
      zero_refs[d.entry.host_offset] += refs;
    }
  }
  const std::vector<uint8_t> zeros(cluster_size_, 0);
  for (size_t t = 0; t < tables.size(); ++t) {
    if (progress) progress(t, tables.size());
    const uint64_t toff = tables[t];
    CO_RETURN_IF_ERROR(co_await file_->read_exact(toff, table.data(), table.size(), "L2 table"));
    struct Fix {
      size_t index;
      uint64_t host;  // where zeros go (0: the entry just becomes unallocated)
      bool copied;
    };
    std::vector<Fix> fixes;
    uint64_t table_refs = 0;  // L1 tables reaching this table (its refcount), when needed
    for (size_t i = 0; i < l2_entries_; ++i) {
      const uint64_t raw = load_be64(&table[i * 8]);
      L2Decoded d = decode_l2(raw, cluster_bits_, 3);
      if (!d.entry.is_zero()) continue;
      if (d.defect != L2Defect::kNone) {
        co_return corruption(strfmt("%s: L2 table at 0x%" PRIx64 " entry %zu (0x%" PRIx64
                                    ") is invalid",
                                    file_->name().c_str(), toff, i, raw));
      }
      if (table_refs == 0) {
        auto guard = co_await alloc_mu_.lock();
        CO_ASSIGN_OR_RETURN(table_refs, co_await refcount_of(toff >> cluster_bits_));
        if (table_refs == 0) {
          co_return corruption(
              strfmt("%s: L2 table at 0x%" PRIx64 " has refcount 0", file_->name().c_str(), toff));
        }
      }
      if (d.entry.kind == ClusterKind::kZeroAlloc) {
        const uint64_t host = d.entry.host_offset;
        uint64_t rc;
        {
          auto guard = co_await alloc_mu_.lock();
          CO_ASSIGN_OR_RETURN(rc, co_await refcount_of(host >> cluster_bits_));
        }
        if (rc > zero_refs[host]) {
          co_return not_supported(strfmt("%s: zero cluster at host offset 0x%" PRIx64
                                         " shares its data with another entry; cannot expand it",
                                         file_->name().c_str(), host));
        }
        fixes.push_back({i, host, rc == 1});
      } else if (!backing_) {
        fixes.push_back({i, 0, false});
      } else {
        uint64_t host;
        {
          auto guard = co_await alloc_mu_.lock();
          CO_ASSIGN_OR_RETURN(host, co_await alloc_clusters(1));
          if (table_refs > 1) {
            CO_RETURN_IF_ERROR(co_await update_refcounts(host >> cluster_bits_, 1,
                                                         static_cast<int64_t>(table_refs - 1)));
          }
        }
        fixes.push_back({i, host, table_refs == 1});
      }
    }
    if (fixes.empty()) continue;
    // New refcounts durable, then the zeros, then the table.
    CO_RETURN_IF_ERROR(co_await settle_refcounts());
    for (const Fix& f : fixes) {
      if (f.host == 0) continue;
      if (overlaps_metadata(f.host, cluster_size_)) {
        co_return co_await mark_corrupt(
            strfmt("zero cluster at host offset 0x%" PRIx64 " overlaps metadata", f.host));
      }
      CO_RETURN_IF_ERROR(co_await file_->write(f.host, zeros.data(), zeros.size()));
    }
    CO_RETURN_IF_ERROR(co_await file_->flush());
    for (const Fix& f : fixes)
      store_be64(&table[f.index * 8], f.host ? encode_normal(f.host, f.copied).entry : 0);
    CO_RETURN_IF_ERROR(co_await file_->write(toff, table.data(), table.size()));
    CO_RETURN_IF_ERROR(co_await file_->flush());
  }
  if (progress) progress(tables.size(), tables.size());
  co_return Status{};
}

Task<Result<bool>> Qcow2Image::has_compressed_clusters() {
  for (uint64_t off = 0; off < h_.size;) {
    CO_ASSIGN_OR_RETURN(BlockStatus bs, co_await block_status(off, h_.size - off));
    if (bs.compressed) co_return true;
    if (bs.length == 0) break;
    off += bs.length;
  }
  co_return false;
}

}  // namespace img::qcow2
