// Internal snapshots (spec: "Snapshots"; img/snapshot.h is the interface).
//
// A snapshot is an L1 table of its own whose L2 tables and data clusters the active image
// shares until it writes there (copy-on-write: get_l2 copies a shared L2 table, write_allocating
// a shared data cluster). Refcounts count paths: a cluster has one reference per L1 table that
// reaches it, so create adds one to every L2 table and data cluster the active L1 reaches, and
// delete takes one off everything the snapshot's L1 reaches. OFLAG_COPIED marks exactly the
// active entries whose refcount is 1 (spec: "Cluster mapping").
//
// The passes over the trees stream (refcount_batch.h): L2 tables in large sequential reads,
// refcount blocks held in memory and each written once, so time follows the metadata bytes,
// not one cache lookup per cluster.
//
// Order (a crash at any point leaves the old or the new snapshot table, at worst leaked
// clusters): everything new (L1 copy, snapshot table) is written to free clusters first;
// refcounts only go up before the header write that commits, and only go down after it.
// COPIED is cleared only once the higher refcounts are durable, and durably before a create
// commits; it is set only after the commit, written with the lower refcounts under one flush:
// in between a flag may say "1" where the refcount is still higher than the references (a leak;
// writing in place is safe, nothing else references the cluster), or stay clear where the
// refcount is really 1 (a needless copy-on-write). Never does a flag say "1" of a cluster a
// committed snapshot shares.
#include "img/snapshot.h"

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <ctime>

#include "qcow2/driver.h"
#include "qcow2/refcount_batch.h"

namespace img::qcow2 {

namespace {
constexpr uint64_t kOffSize = 24;         // size (8), crypt_method (4), l1_size (4), l1 offset (8)
constexpr uint64_t kOffNbSnapshots = 60;  // nb_snapshots (4), snapshots_offset (8)

}  // namespace

Task<Status> Qcow2Image::quiesce(const char* op) {
  CO_RETURN_IF_ERROR(check_writable(op));
  CO_RETURN_IF_ERROR(co_await mark_dirty_if_lazy());
  CO_RETURN_IF_ERROR(co_await sync_l2_tables(/*with_refcounts=*/true));
  CO_RETURN_IF_ERROR(l2_cache_->drop_all());
  CO_RETURN_IF_ERROR(refcount_cache_->drop_all());
  co_return Status{};
}

Task<Status> Qcow2Image::settle_refcounts() {
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  uint64_t rcn = refcount_cache_->written_count();
  CO_RETURN_IF_ERROR(co_await file_->flush());
  refcount_cache_->synced_up_to(rcn);
  co_return refcount_cache_->drop_all();
}

Task<void> Qcow2Image::give_back_unreferenced(std::vector<std::pair<uint64_t, uint64_t>> ranges) {
  // Best effort: the caller is already failing, and a range that stays allocated is a leak.
  for (auto [off, bytes] : ranges) {
    if (off != 0 && bytes != 0) {
      (void)co_await free_clusters(off, div_round_up(bytes, cluster_size_));
    }
  }
  (void)co_await sync_l2_tables(/*with_refcounts=*/true);
}

Task<Result<uint64_t>> Qcow2Image::write_new(const std::vector<uint8_t>& bytes) {
  if (bytes.empty()) co_return uint64_t{0};
  uint64_t off;
  {
    auto guard = co_await alloc_mu_.lock();
    CO_ASSIGN_OR_RETURN(off, co_await alloc_clusters(div_round_up(bytes.size(), cluster_size_)));
  }
  if (overlaps_metadata(off, bytes.size())) {
    co_return corruption(strfmt("%s: newly allocated clusters at 0x%" PRIx64 " overlap metadata",
                                file_->name().c_str(), off));
  }
  CO_RETURN_IF_ERROR(co_await file_->write(off, bytes.data(), bytes.size()));
  co_return off;
}

Task<Status> Qcow2Image::commit_header(uint64_t off, const uint8_t* p, size_t n) {
  auto guard = co_await header_mu_.lock();
  CO_RETURN_IF_ERROR(co_await file_->write(off, p, n));
  co_return co_await file_->flush();
}

void Qcow2Image::refresh_metadata_clusters() {
  metadata_clusters_.clear();
  auto add = [&](uint64_t off, uint64_t len) {
    for (uint64_t c = off >> cluster_bits_; len && c <= (off + len - 1) >> cluster_bits_; ++c) {
      metadata_clusters_.insert(c);
    }
  };
  for (uint64_t e : reftable_) {
    if (e & kRefTableOffsetMask) add(e & kRefTableOffsetMask, 1);
  }
  for (uint64_t e : l1_) {
    if (e & kL1OffsetMask) add(e & kL1OffsetMask, 1);
  }
  if (h_.nb_snapshots) add(h_.snapshots_offset, snapshots_size_);
  auto fsize = file_->size();
  for (const auto& s : snapshots_) {
    if (fsize && check_snapshot_l1(s, cluster_size_, *fsize)) {
      add(s.l1_table_offset, uint64_t{s.l1_size} * 8);
    }
  }
}

Task<Result<std::vector<uint64_t>>> Qcow2Image::load_snapshot_l1(const SnapshotEntry& s) {
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  CO_RETURN_IF_ERROR(check_snapshot_l1(s, cluster_size_, fsize));
  std::vector<uint8_t> raw(uint64_t{s.l1_size} * 8);
  if (!raw.empty()) {
    CO_RETURN_IF_ERROR(
        co_await file_->read_exact(s.l1_table_offset, raw.data(), raw.size(), "snapshot L1"));
  }
  std::vector<uint64_t> l1(s.l1_size);
  for (size_t i = 0; i < l1.size(); ++i) l1[i] = load_be64(&raw[i * 8]);
  co_return l1;
}

Task<Result<SnapshotEntry>> Qcow2Image::snapshot_create(SnapshotEntry sn) {
  // As QEMU: a snapshot would share data clusters, which a data file cannot refcount.
  if (has_data_file()) co_return no_data_file_support("internal snapshots");
  CO_RETURN_IF_ERROR(co_await quiesce("snapshot create"));
  if (snapshots_.size() >= kMaxSnapshots) {
    co_return invalid_argument(strfmt("%s: the image already has %" PRIu64 " snapshots",
                                      file_->name().c_str(), kMaxSnapshots));
  }
  if (sn.id.empty()) {
    // As QEMU's find_new_snapshot_id: one more than the largest numeric id.
    unsigned long max_id = 0;
    for (const auto& s : snapshots_)
      max_id = std::max(max_id, std::strtoul(s.id.c_str(), nullptr, 10));
    sn.id = std::to_string(max_id + 1);
  }
  for (const auto& s : snapshots_) {
    if (s.id == sn.id) {
      co_return invalid_argument(
          strfmt("%s: a snapshot with id '%s' exists", file_->name().c_str(), sn.id.c_str()));
    }
  }
  sn.disk_size = h_.size;
  sn.l1_size = h_.l1_size;
  // The snapshot's L1 is a copy of the active one; the tables it names are shared from now on.
  std::vector<uint64_t> sn_l1 = l1_;
  for (auto& e : sn_l1) e &= ~kOflagCopied;
  CO_ASSIGN_OR_RETURN(sn.l1_table_offset, co_await write_new(encode_l1(sn_l1)));
  std::vector<SnapshotEntry> table = snapshots_;
  table.push_back(sn);
  CO_ASSIGN_OR_RETURN(auto raw_table, encode_snapshot_table(table));
  CO_ASSIGN_OR_RETURN(uint64_t table_off, co_await write_new(raw_table));
  CO_RETURN_IF_ERROR(co_await settle_refcounts());

  auto guard = co_await alloc_mu_.lock();
  RefcountBatch rb(*file_, reftable_, cluster_bits_, refcount_order_);
  if (auto counted = co_await refcount_tree(rb, l1_, +1); !counted) {
    // Refused before any refcount changed (a refcount too narrow to share a cluster once more):
    // nothing refers to the new L1 copy and table, so their clusters go back instead of leaking.
    std::vector<std::pair<uint64_t, uint64_t>> made;
    made.emplace_back(sn.l1_table_offset, uint64_t{sn_l1.size()} * 8);
    made.emplace_back(table_off, raw_table.size());
    co_await give_back_unreferenced(std::move(made));
    co_return Unexpected(std::move(counted).error());
  }
  CO_RETURN_IF_ERROR(co_await rb.write_dirty());
  CO_RETURN_IF_ERROR(co_await file_->flush());
  // Refcounts are up and durable: now the active entries lose COPIED, durably before the
  // commit (a flag left set on a cluster the committed snapshot shares would let a write in
  // place change the snapshot).
  CO_RETURN_IF_ERROR(co_await fix_copied(rb, /*durable=*/true));

  uint8_t hdr[12];
  store_be32(hdr, static_cast<uint32_t>(table.size()));
  store_be64(hdr + 4, table_off);
  CO_RETURN_IF_ERROR(co_await commit_header(kOffNbSnapshots, hdr, sizeof hdr));
  const uint64_t old_off = h_.snapshots_offset, old_size = snapshots_size_;
  const bool had_table = h_.nb_snapshots > 0;
  h_.nb_snapshots = static_cast<uint32_t>(table.size());
  h_.snapshots_offset = table_off;
  snapshots_ = std::move(table);
  snapshots_size_ = raw_table.size();
  refresh_metadata_clusters();
  // The old table is referenced by nothing now (the header write is durable).
  if (had_table && old_size) {
    CO_RETURN_IF_ERROR(co_await free_clusters(
        old_off, div_round_up(old_off + old_size, cluster_size_) - (old_off >> cluster_bits_)));
    CO_RETURN_IF_ERROR(co_await sync_l2_tables(/*with_refcounts=*/true));
  }
  co_return snapshots_.back();
}

Task<Status> Qcow2Image::snapshot_apply(size_t index) {
  // As QEMU: a snapshot would share data clusters, which a data file cannot refcount.
  if (has_data_file()) co_return no_data_file_support("internal snapshots");
  CO_RETURN_IF_ERROR(co_await quiesce("snapshot apply"));
  CO_RETURN_IF_ERROR(co_await mark_bitmaps_before_change());  // the guest's data changes
  const SnapshotEntry sn = snapshots_.at(index);
  if (sn.disk_size > kMaxImageSize) {
    co_return corruption(strfmt("%s: snapshot '%s' has a disk size of %" PRIu64 " bytes, past "
                                "the 2^56 limit",
                                file_->name().c_str(), sn.name.c_str(), sn.disk_size));
  }
  if (sn.l1_size < l1_entries_for(h_, sn.disk_size)) {
    co_return corruption(
        strfmt("%s: snapshot '%s' has an L1 table of %u entries, too small "
               "for its disk size %" PRIu64,
               file_->name().c_str(), sn.name.c_str(), sn.l1_size, sn.disk_size));
  }
  CO_ASSIGN_OR_RETURN(std::vector<uint64_t> new_l1, co_await load_snapshot_l1(sn));
  for (auto& e : new_l1) e &= ~kOflagCopied;  // fix_copied sets what is right
  CO_ASSIGN_OR_RETURN(uint64_t l1_off, co_await write_new(encode_l1(new_l1)));
  CO_RETURN_IF_ERROR(co_await settle_refcounts());

  auto guard = co_await alloc_mu_.lock();
  RefcountBatch rb(*file_, reftable_, cluster_bits_, refcount_order_);
  if (auto counted = co_await refcount_tree(rb, new_l1, +1); !counted) {
    std::vector<std::pair<uint64_t, uint64_t>> made;  // as in create
    made.emplace_back(l1_off, uint64_t{new_l1.size()} * 8);
    co_await give_back_unreferenced(std::move(made));
    co_return Unexpected(std::move(counted).error());
  }
  CO_RETURN_IF_ERROR(co_await rb.write_dirty());
  CO_RETURN_IF_ERROR(co_await file_->flush());

  // Commit: size, L1 size and L1 offset in one write (crypt_method, between them, is 0).
  uint8_t hdr[24];
  store_be64(hdr, sn.disk_size);
  store_be32(hdr + 8, h_.crypt_method);
  store_be32(hdr + 12, sn.l1_size);
  store_be64(hdr + 16, l1_off);
  CO_RETURN_IF_ERROR(co_await commit_header(kOffSize, hdr, sizeof hdr));
  std::vector<uint64_t> old_l1 = std::move(l1_);
  const uint64_t old_l1_off = h_.l1_table_offset;
  h_.size = sn.disk_size;
  h_.l1_size = sn.l1_size;
  h_.l1_table_offset = l1_off;
  l1_ = std::move(new_l1);

  // The old active tree loses its references (in memory first: COPIED goes on disk before
  // the lower refcounts do).
  CO_RETURN_IF_ERROR(co_await refcount_tree(rb, old_l1, -1));
  if (!old_l1.empty()) {
    uint64_t first = old_l1_off >> cluster_bits_;
    uint64_t n = div_round_up(old_l1.size() * 8, cluster_size_);
    std::vector<uint64_t> cl;
    for (uint64_t c = first; c < first + n; ++c) cl.push_back(c);
    CO_RETURN_IF_ERROR(co_await rb.load(cl));
    for (uint64_t c : cl) CO_RETURN_IF_ERROR(rb.add(c, -1));
  }
  // Nothing but the active tree references what it reaches now: flags set and refcounts lowered
  // may reach the disk in any order (a crash between leaves leaks, or a clear flag on a
  // refcount of 1), so one flush at the end covers both.
  CO_RETURN_IF_ERROR(co_await fix_copied(rb, /*durable=*/false));
  CO_RETURN_IF_ERROR(co_await rb.write_dirty());
  CO_RETURN_IF_ERROR(co_await file_->flush());
  free_cluster_index_ = std::min(free_cluster_index_, rb.lowest_freed());
  refresh_metadata_clusters();
  co_return Status{};
}

Task<Status> Qcow2Image::snapshot_delete(size_t index) {
  // As QEMU: a snapshot would share data clusters, which a data file cannot refcount.
  if (has_data_file()) co_return no_data_file_support("internal snapshots");
  CO_RETURN_IF_ERROR(co_await quiesce("snapshot delete"));
  const SnapshotEntry sn = snapshots_.at(index);
  CO_ASSIGN_OR_RETURN(std::vector<uint64_t> sn_l1, co_await load_snapshot_l1(sn));
  {
    // Its L1 entries are checked before the commit, so a hostile one fails with nothing done.
    CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
    auto stream = L2Stream::make(*file_, sn_l1, cluster_size_, fsize);
    if (!stream) co_return Unexpected(std::move(stream).error());
  }
  std::vector<SnapshotEntry> table = snapshots_;
  table.erase(table.begin() + index);
  CO_ASSIGN_OR_RETURN(auto raw_table, encode_snapshot_table(table));
  CO_ASSIGN_OR_RETURN(uint64_t table_off, co_await write_new(raw_table));
  CO_RETURN_IF_ERROR(co_await settle_refcounts());

  uint8_t hdr[12];
  store_be32(hdr, static_cast<uint32_t>(table.size()));
  store_be64(hdr + 4, table_off);
  CO_RETURN_IF_ERROR(co_await commit_header(kOffNbSnapshots, hdr, sizeof hdr));
  const uint64_t old_off = h_.snapshots_offset, old_size = snapshots_size_;
  h_.nb_snapshots = static_cast<uint32_t>(table.size());
  h_.snapshots_offset = table_off;
  snapshots_ = std::move(table);
  snapshots_size_ = raw_table.size();

  // Everything the snapshot held loses one reference: its tree, its L1, the old table.
  auto guard = co_await alloc_mu_.lock();
  RefcountBatch rb(*file_, reftable_, cluster_bits_, refcount_order_);
  CO_RETURN_IF_ERROR(co_await refcount_tree(rb, sn_l1, -1));
  std::vector<uint64_t> cl;
  auto add_range = [&](uint64_t off, uint64_t len) {
    for (uint64_t c = off >> cluster_bits_; len && c <= (off + len - 1) >> cluster_bits_; ++c) {
      cl.push_back(c);
    }
  };
  add_range(sn.l1_table_offset, uint64_t{sn.l1_size} * 8);
  add_range(old_off, old_size);
  CO_RETURN_IF_ERROR(co_await rb.load(cl));
  for (uint64_t c : cl) CO_RETURN_IF_ERROR(rb.add(c, -1));
  // Nothing but the active tree references what it reaches now: flags set and refcounts lowered
  // may reach the disk in any order (a crash between leaves leaks, or a clear flag on a
  // refcount of 1), so one flush at the end covers both.
  CO_RETURN_IF_ERROR(co_await fix_copied(rb, /*durable=*/false));
  CO_RETURN_IF_ERROR(co_await rb.write_dirty());
  CO_RETURN_IF_ERROR(co_await file_->flush());
  free_cluster_index_ = std::min(free_cluster_index_, rb.lowest_freed());
  refresh_metadata_clusters();
  co_return Status{};
}

namespace {

SnapshotInfo to_info(const SnapshotEntry& s) {
  SnapshotInfo i;
  i.id = s.id;
  i.name = s.name;
  i.vm_state_size = s.vm_state_size;
  i.date_sec = s.date_sec;
  i.date_nsec = s.date_nsec;
  i.vm_clock_nsec = s.vm_clock_nsec;
  i.disk_size = s.disk_size;
  if (s.icount != kNoIcount) i.icount = s.icount;
  return i;
}

Result<Qcow2Image*> as_qcow2(const BlockDriver& d) {
  auto* q = dynamic_cast<const Qcow2Image*>(&d);
  if (!q) {
    return not_supported(strfmt("the %s format has no internal snapshots", d.format_name()));
  }
  return const_cast<Qcow2Image*>(q);
}

}  // namespace
}  // namespace img::qcow2

namespace img {

Result<std::vector<SnapshotInfo>> list_snapshots(const BlockDriver& d) {
  ASSIGN_OR_RETURN(qcow2::Qcow2Image * q, qcow2::as_qcow2(d));
  std::vector<SnapshotInfo> out;
  for (const auto& s : q->snapshots()) out.push_back(qcow2::to_info(s));
  return out;
}

Task<Result<SnapshotInfo>> create_snapshot(BlockDriver& d, const SnapshotCreateOptions& o) {
  CO_ASSIGN_OR_RETURN(qcow2::Qcow2Image * q, qcow2::as_qcow2(d));
  qcow2::SnapshotEntry sn;
  sn.name = o.name;
  sn.id = o.id;
  sn.date_sec = o.date_sec;
  sn.date_nsec = o.date_nsec;
  if (sn.date_sec == 0 && sn.date_nsec == 0) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    sn.date_sec = static_cast<uint32_t>(ts.tv_sec);
    // QEMU takes the time in microseconds (g_get_real_time).
    sn.date_nsec = static_cast<uint32_t>(ts.tv_nsec / 1000 * 1000);
  }
  sn.vm_clock_nsec = o.vm_clock_nsec;
  sn.icount = o.icount;
  CO_ASSIGN_OR_RETURN(qcow2::SnapshotEntry made, co_await q->snapshot_create(std::move(sn)));
  co_return qcow2::to_info(made);
}

Task<Status> apply_snapshot(BlockDriver& d, const std::string& key) {
  CO_ASSIGN_OR_RETURN(qcow2::Qcow2Image * q, qcow2::as_qcow2(d));
  const auto& sns = q->snapshots();
  auto it = std::find_if(sns.begin(), sns.end(), [&](const auto& s) { return s.id == key; });
  if (it == sns.end()) {
    it = std::find_if(sns.begin(), sns.end(), [&](const auto& s) { return s.name == key; });
  }
  if (it == sns.end())
    co_return make_error(ErrorCode::kNotFound, "snapshot '" + key + "' not found", ENOENT);
  co_return co_await q->snapshot_apply(it - sns.begin());
}

Task<Status> delete_snapshot(BlockDriver& d, const std::string& id, const std::string& name) {
  CO_ASSIGN_OR_RETURN(qcow2::Qcow2Image * q, qcow2::as_qcow2(d));
  const auto& sns = q->snapshots();
  auto it = std::find_if(sns.begin(), sns.end(), [&](const auto& s) {
    return s.id == id && (name.empty() || s.name == name);
  });
  if (it == sns.end()) co_return make_error(ErrorCode::kNotFound, "snapshot not found", ENOENT);
  co_return co_await q->snapshot_delete(it - sns.begin());
}

}  // namespace img

namespace img {

Task<Status> load_snapshot_tmp(BlockDriver& d, const SnapshotSelector& sel) {
  auto* q = dynamic_cast<qcow2::Qcow2Image*>(&d);
  if (!q) {
    co_return not_supported(
        strfmt("Block format '%s' used by device '' does not support "
               "temporarily loading internal snapshots",
               d.format_name()));
  }
  co_return co_await q->load_snapshot_view(sel);
}

}  // namespace img
