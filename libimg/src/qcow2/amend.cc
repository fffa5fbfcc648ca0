// qemu-img amend on a qcow2 image (QEMU 7.2's qcow2_amend_options and qcow2_downgrade in
// block/qcow2.c): the requested changes run in QEMU's order, with QEMU's messages:
//   1. a compat upgrade (0.10 -> 1.1): the header is rewritten as version 3;
//   2. a refcount width change (amend_refcount.cc);
//   3. data_file / data_file_raw: the recorded name changes (the file is not opened; QEMU
//      neither moves nor checks it), the raw bit may only be cleared;
//   4. backing_file / backing_fmt: QEMU 7.2 refuses any change and points to rebase;
//   5. lazy_refcounts on / off (off marks the image clean first);
//   6. size: a resize (a shrink drops what lies past the new end, as QEMU's blk_truncate);
//   7. a compat downgrade last, so that the steps before can remove v3-only features.
// Each step ends with a header write and a flush (its commit point), so an amend cut anywhere
// leaves a valid image: the old one, or one with the steps before the cut done.
#include <cinttypes>

#include "qcow2/driver.h"
#include "qcow2/open.h"

namespace img::qcow2 {

namespace {
// Present vs. requested, where an absent option and an image without the value are the same
// (QEMU compares with g_strcmp0, NULL for both).
bool same_optional(const std::optional<std::string>& want, const std::string& have) {
  if (!want) return have.empty();
  return !have.empty() && *want == have;
}
}  // namespace

Task<Status> Qcow2Image::rewrite_header(Header h) {
  Header out = header_for_rewrite(h);
  CO_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, encode_header(out));
  auto guard = co_await header_mu_.lock();
  CO_RETURN_IF_ERROR(co_await file_->write(0, bytes.data(), bytes.size()));
  CO_RETURN_IF_ERROR(co_await file_->flush());
  h_ = std::move(out);
  co_return Status{};
}

Task<Status> Qcow2Image::mark_clean() {
  if (!h_.has(kIncompatDirty)) co_return Status{};
  // Refcounts and tables durable first: then the refcounts are true and the bit may go.
  CO_RETURN_IF_ERROR(co_await flush());
  CO_RETURN_IF_ERROR(
      co_await write_incompatible_features(h_.incompatible_features & ~kIncompatDirty));
  dirty_on_disk_ = false;
  co_return Status{};
}

Task<Status> Qcow2Image::amend(const Qcow2AmendOptions& o, const AmendProgress& progress) {
  CO_RETURN_IF_ERROR(check_writable("amend"));
  const int old_version = static_cast<int>(h_.version);
  const int new_version = o.version.value_or(old_version);
  // Refused while QEMU parses the options, before anything changes.
  if (o.data_file && !h_.has(kIncompatExternalData)) {
    co_return invalid_argument(
        "data-file can only be set for images that use an external data file");
  }
  if (o.data_file_raw && *o.data_file_raw && !data_file_raw()) {
    co_return invalid_argument("data-file-raw cannot be set on existing images");
  }

  if (new_version > old_version) {
    // Version 2 images have no feature bits and 16-bit refcounts, which version 3 reads the
    // same way; the header grows its v3 fields and feature name table.
    CO_RETURN_IF_ERROR(co_await flush());
    Header h = h_;
    h.version = 3;
    CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(h)));
  }

  if (o.refcount_bits && *o.refcount_bits != h_.refcount_bits()) {
    if (new_version < 3 && *o.refcount_bits != 16) {
      co_return invalid_argument(
          "Refcount widths other than 16 bits require compatibility level 1.1 or above (use "
          "compat=1.1 or greater)");
    }
    uint32_t order = 0;
    while ((1u << order) < *o.refcount_bits) ++order;
    CO_RETURN_IF_ERROR(co_await change_refcount_order(order, progress));
  }

  const bool drop_raw = o.data_file_raw && !*o.data_file_raw && data_file_raw();
  if ((o.data_file && *o.data_file != h_.external_data_file) || drop_raw) {
    // QEMU's qcow2_update_header with the new name (an empty one drops the extension, and the
    // image then names no data file); the file open now stays in use until close.
    Header h = h_;
    if (o.data_file) h.external_data_file = *o.data_file;
    if (drop_raw) h.autoclear_features &= ~kAutoclearDataFileRaw;
    CO_RETURN_IF_ERROR(co_await flush());
    CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(h)));
  }

  if ((o.backing_file || o.backing_format) &&
      (!same_optional(o.backing_file, h_.backing_file) ||
       !same_optional(o.backing_format, h_.backing_format))) {
    co_return invalid_argument(
        "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
  }

  const bool lazy_now = h_.compatible_features & kCompatLazyRefcounts;
  if (o.lazy_refcounts && *o.lazy_refcounts != lazy_now) {
    if (*o.lazy_refcounts) {
      if (new_version < 3) {
        co_return invalid_argument(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use "
            "compat=1.1 or greater)");
      }
      CO_RETURN_IF_ERROR(co_await flush());
      Header h = h_;
      h.compatible_features |= kCompatLazyRefcounts;
      CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(h)));
      lazy_ = true;
    } else {
      // Refcounts must be true before a reader stops expecting them to be stale.
      CO_RETURN_IF_ERROR(co_await mark_clean());
      lazy_ = false;
      Header h = h_;
      h.compatible_features &= ~kCompatLazyRefcounts;
      CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(h)));
    }
  }

  if (o.size && *o.size != 0 && *o.size != h_.size) {
    CO_RETURN_IF_ERROR(co_await resize(*o.size, {.allow_shrink = true}));
    CO_RETURN_IF_ERROR(co_await flush());
  }

  if (new_version < old_version) CO_RETURN_IF_ERROR(co_await downgrade(progress));
  co_return co_await flush();
}

Task<Status> Qcow2Image::downgrade(const AmendProgress& progress) {
  if (refcount_order_ != 4) co_return invalid_argument("compat=0.10 requires refcount_bits=16");
  if (h_.has(kIncompatExternalData)) {
    co_return invalid_argument("Cannot downgrade an image with a data file");
  }
  // Version 2 snapshot entries have no size of their own (the image's is theirs) and a 32-bit
  // VM state size.
  for (const SnapshotEntry& s : snapshots_) {
    if (s.disk_size != h_.size || s.vm_state_size > UINT32_MAX) {
      co_return invalid_argument("Internal snapshots prevent downgrade of image");
    }
  }
  CO_RETURN_IF_ERROR(co_await mark_clean());
  if (uint64_t rest = h_.incompatible_features & ~kIncompatCompressionType) {
    co_return not_supported(
        strfmt("Cannot downgrade an image with incompatible features 0x%" PRIx64 " set", rest));
  }
  // Compatible features may be dropped (readers ignore unknown ones); lazy refcounts are off
  // from here, so what follows orders refcounts before references again.
  lazy_ = false;
  CO_RETURN_IF_ERROR(co_await expand_zero_clusters(progress));
  Header h = h_;  // after the expansion, which may have grown the refcount table
  h.compatible_features = 0;
  h.autoclear_features = 0;
  if (h.has(kIncompatCompressionType)) {
    CO_ASSIGN_OR_RETURN(bool compressed, co_await has_compressed_clusters());
    if (compressed) {
      co_return not_supported(
          "Cannot downgrade an image with zstd compression type and existing compressed "
          "clusters");
    }
    h.compression_type = 0;
    h.incompatible_features &= ~kIncompatCompressionType;
  }
  CO_RETURN_IF_ERROR(co_await flush());
  h.version = 2;
  h.refcount_order = 4;
  CO_RETURN_IF_ERROR(co_await rewrite_header(std::move(h)));
  co_return Status{};
}

Task<Status> amend_qcow2(BlockDriver& d, const Qcow2AmendOptions& o,
                         const AmendProgress& progress) {
  auto* q = dynamic_cast<Qcow2Image*>(&d);
  if (!q) {
    co_return not_supported(
        strfmt("Format driver '%s' does not support option amendment", d.format_name()));
  }
  co_return co_await q->amend(o, progress);
}

}  // namespace img::qcow2
