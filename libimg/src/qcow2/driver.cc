#include "qcow2/driver.h"

#include <algorithm>

#include "img/qcow2.h"
#include "qcow2/bitmap.h"
#include "qcow2/open.h"

namespace img::qcow2 {

namespace {
// Defaults as QEMU's: the L2 cache covers the whole image up to 32 MiB of tables (a 256 GiB
// image with 64 KiB clusters); the refcount cache is a quarter of it, at least 4 tables.
constexpr uint64_t kMaxDefaultL2Cache = 32ull << 20;
}  // namespace

Task<Result<std::unique_ptr<BlockDriver>>> open_qcow2(IoLoop& loop, std::unique_ptr<File> file,
                                                      const OpenOptions& opts) {
  co_return co_await Qcow2Image::open(loop, std::move(file), opts);
}

Qcow2Image::Qcow2Image(IoLoop& loop, std::unique_ptr<File> file, Header h, bool read_only)
    : loop_(loop),
      file_(std::move(file)),
      h_(std::move(h)),
      read_only_(read_only),
      alloc_mu_(loop),
      header_mu_(loop),
      dirty_mu_(loop),
      bitmap_mu_(loop),
      cluster_locks_(loop) {
  cluster_bits_ = h_.cluster_bits;
  cluster_size_ = h_.cluster_size();
  extended_ = h_.has(kIncompatExtendedL2);
  l2_entry_bytes_ = l2_entry_bytes(h_);
  l2_entries_ = cluster_size_ / l2_entry_bytes_;
  l2_bits_ = cluster_bits_ - (extended_ ? 4 : 3);
  sc_bits_ = extended_ ? cluster_bits_ - 5 : cluster_bits_;
  sc_size_ = 1ull << sc_bits_;
  refcount_order_ = h_.refcount_order;
  refblock_entries_ = refcount_block_entries(cluster_bits_, refcount_order_);
  lazy_ = h_.compatible_features & kCompatLazyRefcounts;
}

Qcow2Image::~Qcow2Image() = default;

Task<Result<std::unique_ptr<BlockDriver>>> Qcow2Image::open(IoLoop& loop,
                                                            std::unique_ptr<File> file,
                                                            const OpenOptions& opts) {
  bool ro = opts.read_only || file->read_only();
  CO_ASSIGN_OR_RETURN(Header h, co_await read_header(*file));
  const std::string& name = file->name();
  if (!h.backing_file.empty() && opts.backing == BackingPolicy::kRefuse) {
    co_return invalid_argument(strfmt("%s: the image has a backing file ('%s') and backing "
                                      "files are refused",
                                      name.c_str(), h.backing_file.c_str()));
  }
  if (h.has(kIncompatExternalData)) {
    // As QEMU's qcow2_do_open: the bit without the extension naming the file leaves the data
    // nowhere.
    if (h.external_data_file.empty()) {
      co_return make_error(ErrorCode::kCorruption,
                           name + ": 'data-file' is required for this image", EINVAL);
    }
    if (opts.backing == BackingPolicy::kRefuse) {
      co_return invalid_argument(
          strfmt("%s: the image has an external data file ('%s') and "
                 "external files are refused",
                 name.c_str(), h.external_data_file.c_str()));
    }
  }
  if (h.has(kIncompatExtendedL2) && h.cluster_bits < 14) {
    // As QEMU's qcow2_do_open: a subcluster is at least 512 bytes.
    co_return invalid_argument(
        strfmt("%s: unsupported subcluster size: %llu (extended L2 "
               "entries need clusters of 16 KiB or more)",
               name.c_str(), (unsigned long long)(h.cluster_size() / 32)));
  }
  if (h.has(kIncompatCorrupt) && !ro) {
    co_return read_only_error(name + ": image is corrupt; cannot be opened read/write (run "
                                     "'img check -r all' to repair it)");
  }
  if (h.has(kIncompatDirty) && !ro) {
    // An image with lazy refcounts that was not closed cleanly: its refcounts may be stale.
    // Rebuild them from the L1/L2 tables before any allocation trusts them, as QEMU does.
    CO_ASSIGN_OR_RETURN(CheckResult r, co_await check_qcow2(*file, RepairMode::kAll));
    if (r.corruptions > r.corruptions_fixed) {
      co_return corruption(strfmt("%s: could not repair the refcounts of a dirty image (%llu "
                                  "corruptions left)",
                                  name.c_str(), (unsigned long long)(r.corruptions -
                                                                     r.corruptions_fixed)));
    }
    CO_ASSIGN_OR_RETURN(h, co_await read_header(*file));
    if (h.has(kIncompatDirty)) {
      CO_RETURN_IF_ERROR(co_await file->flush());
    }
  }
  std::unique_ptr<Qcow2Image> img(new Qcow2Image(loop, std::move(file), std::move(h), ro));
  img->corrupt_ = img->h_.has(kIncompatCorrupt);
  img->dirty_on_disk_ = img->h_.has(kIncompatDirty);
  CO_RETURN_IF_ERROR(co_await img->load_tables(opts));
  if (img->h_.has(kIncompatExternalData)) CO_RETURN_IF_ERROR(co_await img->open_data_file(opts));
  // libimg does not update bitmaps: they are marked in_use before the first change of guest
  // data (mark_bitmaps_before_change), not at open, so a command that changes no guest data
  // (snapshot create, amend, rebase -u) leaves them consistent.
  img->bitmaps_unmarked_ = !ro && img->h_.version >= 3 &&
                           (img->h_.autoclear_features & kAutoclearBitmaps) &&
                           find_bitmaps_extension(img->h_) != nullptr;
  if (!ro && needs_autoclear_rewrite(img->h_)) {
    // Unknown autoclear bits must be cleared by a writer.
    uint8_t buf[8];
    uint64_t kept = img->h_.autoclear_features & kKeptAutoclearMask;
    store_be64(buf, kept);
    CO_RETURN_IF_ERROR(co_await img->file_->write(kOffAutoclearFeatures, buf, 8));
    CO_RETURN_IF_ERROR(co_await img->file_->flush());
    img->h_.autoclear_features = kept;
  }
  co_return std::unique_ptr<BlockDriver>(std::move(img));
}

Task<Status> Qcow2Image::load_tables(const OpenOptions& opts) {
  // The snapshot table (validated against hostile lengths as it is decoded).
  CO_ASSIGN_OR_RETURN(snapshots_, co_await read_snapshot_table(*file_, h_, &snapshots_size_));
  // L1 table (read_header checked offset, size and bounds).
  l1_.resize(h_.l1_size);
  if (h_.l1_size > 0) {
    std::vector<uint8_t> raw(uint64_t(h_.l1_size) * 8);
    CO_RETURN_IF_ERROR(co_await file_->read_exact(h_.l1_table_offset, raw.data(), raw.size(),
                                                  "L1 table"));
    for (uint32_t i = 0; i < h_.l1_size; ++i) l1_[i] = load_be64(&raw[i * 8]);
  }
  uint64_t rt_bytes = uint64_t(h_.refcount_table_clusters) * cluster_size_;
  reftable_.resize(rt_bytes / 8);
  if (rt_bytes > 0) {
    std::vector<uint8_t> raw(rt_bytes);
    CO_RETURN_IF_ERROR(co_await file_->read_exact(h_.refcount_table_offset, raw.data(),
                                                  raw.size(), "refcount table"));
    for (uint64_t i = 0; i < reftable_.size(); ++i) reftable_[i] = load_be64(&raw[i * 8]);
  }
  // Known metadata clusters, for the overlap check.
  refresh_metadata_clusters();

  uint64_t l2_bytes = opts.l2_cache_size;
  if (l2_bytes == 0) {
    uint64_t whole = div_round_up(h_.size, cluster_size_) * l2_entry_bytes_;
    l2_bytes = std::min(whole, kMaxDefaultL2Cache);
  }
  size_t l2_tables = std::max<uint64_t>(4, div_round_up(l2_bytes, cluster_size_));
  uint64_t rc_bytes = opts.refcount_cache_size ? opts.refcount_cache_size : l2_bytes / 4;
  size_t rc_tables = std::max<uint64_t>(4, div_round_up(rc_bytes, cluster_size_));
  l2_cache_ = std::make_unique<TableCache>(loop_, *file_, cluster_size_, l2_tables, "L2 table");
  refcount_cache_ = std::make_unique<TableCache>(loop_, *file_, cluster_size_, rc_tables,
                                                 "refcount block");
  co_return Status{};
}

Status Qcow2Image::check_writable(const char* op) const {
  if (closed_) return invalid_argument(strfmt("%s after close", op));
  if (corrupt_) {
    return read_only_error(strfmt("%s: %s: image is marked corrupt; no further writes",
                                  file_->name().c_str(), op));
  }
  if (read_only_) {
    return read_only_error(strfmt("%s: %s: image is open read-only", file_->name().c_str(), op));
  }
  return {};
}

Task<Status> Qcow2Image::write_incompatible_features(uint64_t bits) {
  auto guard = co_await header_mu_.lock();
  uint8_t buf[8];
  store_be64(buf, bits);
  CO_RETURN_IF_ERROR(co_await file_->write(kOffIncompatibleFeatures, buf, 8));
  CO_RETURN_IF_ERROR(co_await file_->flush());
  h_.incompatible_features = bits;
  co_return Status{};
}

Task<Status> Qcow2Image::mark_bitmaps_before_change() {
  if (!bitmaps_unmarked_) co_return Status{};
  // Every writer waits until the marks are durable: a bitmap must never claim to be consistent
  // with guest data that changed after it.
  auto guard = co_await bitmap_mu_.lock();
  if (!bitmaps_unmarked_) co_return Status{};
  if (!co_await mark_bitmaps_in_use(*file_, h_)) {
    // A directory that cannot be marked cannot be trusted either: drop the bitmaps bit
    // (autoclear rule).
    uint64_t bits = h_.autoclear_features & ~kAutoclearBitmaps;
    uint8_t buf[8];
    store_be64(buf, bits);
    CO_RETURN_IF_ERROR(co_await file_->write(kOffAutoclearFeatures, buf, 8));
    CO_RETURN_IF_ERROR(co_await file_->flush());
    h_.autoclear_features = bits;
  }
  bitmaps_unmarked_ = false;
  co_return Status{};
}

Task<Status> Qcow2Image::mark_dirty_if_lazy() {
  if (!lazy_ || dirty_on_disk_) co_return Status{};
  // Every writer must wait until the bit is durable: with lazy refcounts nothing else orders
  // refcounts before references, so no metadata may change before the bit is on disk.
  auto guard = co_await dirty_mu_.lock();
  if (dirty_on_disk_) co_return Status{};
  CO_RETURN_IF_ERROR(co_await write_incompatible_features(h_.incompatible_features | kIncompatDirty));
  dirty_on_disk_ = true;
  co_return Status{};
}

Task<Status> Qcow2Image::mark_corrupt(std::string why) {
  std::string msg = file_->name() + ": " + why + "; image marked corrupt";
  if (!corrupt_ && !read_only_) {
    corrupt_ = true;
    // Best effort: the error below is what matters to the caller.
    (void)co_await write_incompatible_features(h_.incompatible_features | kIncompatCorrupt);
  }
  corrupt_ = true;
  co_return corruption(msg);
}

Task<Status> Qcow2Image::flush_metadata() {
  // Order is kept by the caches' dependencies; flushing both covers everything.
  CO_RETURN_IF_ERROR(co_await l2_cache_->flush());
  CO_RETURN_IF_ERROR(co_await refcount_cache_->flush());
  co_return Status{};
}

Task<Status> Qcow2Image::flush() {
  if (closed_) co_return invalid_argument("flush after close");
  if (read_only_) co_return Status{};
  co_return co_await sync_l2_tables(/*with_refcounts=*/true);
}

Task<Status> Qcow2Image::sync_l2_tables(bool with_refcounts) {
  // Clusters freed before now had their references dropped before that, in tables dirty now:
  // once those are written and the file flushed, they may be handed out again. Clusters freed
  // while we wait stay in freed_unsynced_.
  std::unordered_set<uint64_t> freed = std::move(freed_unsynced_);
  freed_unsynced_.clear();
  Status s;
  if (with_refcounts) {
    s = co_await flush_metadata();
  } else {
    s = co_await l2_cache_->flush();
  }
  uint64_t l2n = l2_cache_->written_count(), rcn = refcount_cache_->written_count();
  if (s && data_file_) s = co_await data_file_->flush();
  if (s) s = co_await file_->flush();
  if (!s) {
    freed_unsynced_.merge(freed);
    co_return s;
  }
  l2_cache_->synced_up_to(l2n);
  refcount_cache_->synced_up_to(rcn);
  co_return Status{};
}

Task<Status> Qcow2Image::close() {
  if (closed_) co_return Status{};
  Status s;
  if (!read_only_ && !corrupt_) {
    if (wrote_compressed_) s = co_await pad_to_sector();
    if (s) s = co_await flush();
    if (s && dirty_on_disk_) {
      // Everything, refcounts included, is on disk: the image is consistent again.
      s = co_await write_incompatible_features(h_.incompatible_features & ~kIncompatDirty);
      if (s) dirty_on_disk_ = false;
    }
  }
  closed_ = true;
  if (backing_) {
    Status b = co_await backing_->close();
    if (s) s = std::move(b);
  }
  co_return s;
}

std::optional<BackingRef> backing_reference(const BlockDriver& d) {
  auto* q = dynamic_cast<const Qcow2Image*>(&d);
  if (!q || q->header().backing_file.empty()) return std::nullopt;
  return BackingRef{q->header().backing_file, q->header().backing_format};
}

void attach_backing(BlockDriver& d, std::unique_ptr<BlockDriver> backing) {
  auto* q = dynamic_cast<Qcow2Image*>(&d);
  if (q) q->set_backing(std::move(backing));
}

}  // namespace img::qcow2
