// create_qcow2: writes a new qcow2 image laid out as QEMU lays one out (docs/qcow2-format.md,
// "Layout of a new image"): cluster 0 the header, then the refcount table, the refcount blocks,
// the L1 table, and with preallocation the L2 tables and the data clusters. Every cluster written
// has refcount 1 and every L1/L2 entry carries OFLAG_COPIED, so `qemu-img check` is clean.
// Spec: qemu/qemu docs/interop/qcow2.rst, "Header", "Host cluster management", "Cluster mapping".

#include <algorithm>
#include <bit>
#include <cinttypes>

#include "img/qcow2.h"
#include "qcow2/format.h"
#include "qcow2/layout.h"

namespace img {
namespace {

using namespace qcow2;

Status validate(const Qcow2CreateOptions& o) {
  if (o.version != 2 && o.version != 3) {
    return invalid_argument(strfmt("compat version %d: must be 2 (0.10) or 3 (1.1)", o.version));
  }
  if (!std::has_single_bit(o.cluster_size) || o.cluster_size < (1u << kMinClusterBits) ||
      o.cluster_size > (1u << kMaxClusterBits)) {
    return invalid_argument(strfmt("cluster_size %u: must be a power of two between 512 and 2M",
                                   o.cluster_size));
  }
  if (!std::has_single_bit(o.refcount_bits) || o.refcount_bits > 64) {
    return invalid_argument(strfmt("refcount_bits %u: must be a power of two between 1 and 64",
                                   o.refcount_bits));
  }
  if (o.version == 2 && o.refcount_bits != 16) {
    return invalid_argument(strfmt("refcount_bits %u needs compat 1.1 (version 2 images have "
                                   "16-bit refcounts)",
                                   o.refcount_bits));
  }
  if (o.version == 2 && o.lazy_refcounts) {
    return invalid_argument("lazy_refcounts needs compat 1.1 (version 3)");
  }
  if (o.compression_type != "zlib" && o.compression_type != "zstd") {
    return invalid_argument(strfmt("compression_type '%s': must be zlib or zstd",
                                   o.compression_type.c_str()));
  }
  if (o.version == 2 && o.compression_type != "zlib") {
    return invalid_argument("compression_type zstd needs compat 1.1 (version 3)");
  }
  // qemu-img's words (qcow2_co_create): a subcluster is at least 512 bytes, and the feature
  // bit lives in the version 3 header.
  if (o.extended_l2 && o.version < 3) {
    return invalid_argument(
        "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
        "version=v3 or greater)");
  }
  if (o.extended_l2 && o.cluster_size < 16384) {
    return invalid_argument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (o.backing_file.size() > kMaxBackingFileNameSize) {
    return invalid_argument(strfmt("backing file name is %zu bytes, more than %u",
                                   o.backing_file.size(), kMaxBackingFileNameSize));
  }
  if (!o.backing_format.empty() && o.backing_file.empty()) {
    return invalid_argument("backing_format given without a backing file");
  }
  if (!o.backing_file.empty() && o.preallocation != Preallocation::kOff) {
    // As QEMU: preallocated clusters would hide the backing file's data.
    return invalid_argument("backing file and preallocation cannot be used together");
  }
  if (!o.data_file.empty() && o.version < 3) {
    return invalid_argument(
        "External data files are only supported with compatibility level 1.1 and above (use "
        "version=v3 or greater)");
  }
  if (o.data_file.size() > kMaxBackingFileNameSize) {
    return invalid_argument(strfmt("data file name is %zu bytes, more than %u", o.data_file.size(),
                                   kMaxBackingFileNameSize));
  }
  if (o.data_file_raw && o.data_file.empty()) {
    return invalid_argument("data-file-raw requires data-file");
  }
  if (o.data_file_raw && !o.backing_file.empty()) {
    return invalid_argument("Backing file and data-file-raw cannot be used at the same time");
  }
  if (o.size > kMaxImageSize) {
    return invalid_argument(strfmt("size %" PRIu64 " exceeds the qcow2 limit of 2^56 bytes", o.size));
  }
  return {};
}

// Cluster indexes of each area of the new image.
struct Layout {
  uint64_t rt_start, rt_clusters;
  uint64_t rb_start, rb_clusters;
  uint64_t l1_start, l1_clusters, l1_entries;
  uint64_t l2_start, l2_clusters;
  uint64_t data_start, data_clusters;
  uint64_t total;  // clusters in the file
};

// With an external data file the data clusters lie there, not in the image.
Result<Layout> plan(const Header& h, bool prealloc, bool data_file) {
  const uint64_t cs = h.cluster_size();
  Layout l{};
  l.l1_entries = l1_entries_for(h, h.size);
  if (l.l1_entries * 8 > kMaxL1Bytes) {
    return invalid_argument(strfmt("image size %" PRIu64 " is too large for cluster size %" PRIu64
                                   " (the L1 table would exceed 32 MiB); use a larger cluster size",
                                   h.size, cs));
  }
  l.l1_clusters = div_round_up(l.l1_entries * 8, cs);
  l.l2_clusters = prealloc ? l.l1_entries : 0;
  l.data_clusters = prealloc && !data_file ? div_round_up(h.size, cs) : 0;
  const uint64_t fixed = 1 + l.l1_clusters + l.l2_clusters + l.data_clusters;
  // The refcount blocks must cover every cluster, themselves and the table included.
  const RefcountStructure rs = refcount_structure_for(fixed, h);
  const uint64_t rb = rs.blocks, rt = rs.table_clusters;
  if (rt * cs > kMaxRefcountTableBytes) {
    return invalid_argument(strfmt("preallocating %" PRIu64 " bytes needs a refcount table over "
                                   "8 MiB; use a larger cluster size or less preallocation",
                                   h.size));
  }
  l.rt_start = 1;
  l.rt_clusters = rt;
  l.rb_start = l.rt_start + rt;
  l.rb_clusters = rb;
  l.l1_start = l.rb_start + rb;
  l.l2_start = l.l1_start + l.l1_clusters;
  l.data_start = l.l2_start + l.l2_clusters;
  l.total = l.data_start + l.data_clusters;
  return l;
}

Task<Status> write_zeros_really(File& f, uint64_t off, uint64_t len) {
  std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
  while (len > 0) {
    uint64_t n = std::min<uint64_t>(len, zeros.size());
    CO_RETURN_IF_ERROR(co_await f.write(off, zeros.data(), n));
    off += n;
    len -= n;
  }
  co_return Status{};
}

}  // namespace

Task<Status> create_qcow2(File& f, const Qcow2CreateOptions& opts) {
  CO_RETURN_IF_ERROR(validate(opts));
  Header h;
  h.version = opts.version;
  h.cluster_bits = std::countr_zero(opts.cluster_size);
  // QEMU rounds the virtual size up to whole 512-byte sectors.
  h.size = align_up(opts.size, 512);
  h.refcount_order = std::countr_zero(opts.refcount_bits);
  if (opts.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
  if (opts.compression_type == "zstd") {
    h.compression_type = 1;
    h.incompatible_features |= kIncompatCompressionType;
  }
  if (opts.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
  h.backing_file = opts.backing_file;
  h.backing_format = opts.backing_format;
  const bool data_file = !opts.data_file.empty();
  if (data_file) {
    h.incompatible_features |= kIncompatExternalData;
    h.external_data_file = opts.data_file;
    if (opts.data_file_raw) h.autoclear_features |= kAutoclearDataFileRaw;
  }

  // A raw data file maps every cluster (qcow2_co_create: metadata preallocation at least).
  const bool prealloc = opts.preallocation != Preallocation::kOff || opts.data_file_raw;
  CO_ASSIGN_OR_RETURN(Layout l, plan(h, prealloc, data_file));
  const uint64_t cs = h.cluster_size();
  h.refcount_table_offset = l.rt_start * cs;
  h.refcount_table_clusters = static_cast<uint32_t>(l.rt_clusters);
  h.l1_size = static_cast<uint32_t>(l.l1_entries);
  h.l1_table_offset = l.l1_entries ? l.l1_start * cs : 0;
  CO_ASSIGN_OR_RETURN(std::vector<uint8_t> header, encode_header(h));

  CO_RETURN_IF_ERROR(co_await f.truncate(0));
  std::vector<uint8_t> buf(cs);

  // Refcount table: one entry per refcount block.
  const uint64_t per_rt_cluster = cs / 8;
  for (uint64_t c = 0; c < l.rt_clusters; ++c) {
    std::fill(buf.begin(), buf.end(), 0);
    for (uint64_t i = 0; i < per_rt_cluster; ++i) {
      uint64_t b = c * per_rt_cluster + i;
      if (b >= l.rb_clusters) break;
      store_be64(buf.data() + 8 * i, (l.rb_start + b) * cs);
    }
    CO_RETURN_IF_ERROR(co_await f.write((l.rt_start + c) * cs, buf.data(), cs));
  }
  // Refcount blocks: 1 for clusters [0, total), 0 after.
  const uint64_t per_block = refcount_block_entries(h.cluster_bits, h.refcount_order);
  for (uint64_t b = 0; b < l.rb_clusters; ++b) {
    std::fill(buf.begin(), buf.end(), 0);
    uint64_t first = b * per_block;
    uint64_t n = std::min(per_block, l.total - std::min(l.total, first));
    for (uint64_t i = 0; i < n; ++i) set_refcount(buf.data(), i, h.refcount_order, 1);
    CO_RETURN_IF_ERROR(co_await f.write((l.rb_start + b) * cs, buf.data(), cs));
  }
  // L1 table, and with preallocation the L2 tables mapping every guest cluster to its data
  // cluster, laid out contiguously so the image is not fragmented.
  const uint64_t per_l2 = cs / 8;
  for (uint64_t c = 0; c < l.l1_clusters; ++c) {
    std::fill(buf.begin(), buf.end(), 0);
    for (uint64_t i = 0; prealloc && i < per_l2; ++i) {
      uint64_t e = c * per_l2 + i;
      if (e >= l.l1_entries) break;
      store_be64(buf.data() + 8 * i, ((l.l2_start + e) * cs) | kOflagCopied);
    }
    CO_RETURN_IF_ERROR(co_await f.write((l.l1_start + c) * cs, buf.data(), cs));
  }
  // L2 entries: 8 bytes, or 16 with extended L2, whose bitmap stays 0 as QEMU leaves it: the
  // preallocated subclusters are "unallocated" and read as zeros. A data file's clusters lie at
  // their guest offsets (the first one at offset 0, which COPIED tells from unallocated).
  const uint64_t l2e = l2_entry_bytes(h), per_l2_table = cs / l2e;
  const uint64_t mapped = data_file ? (prealloc ? div_round_up(h.size, cs) : 0) : l.data_clusters;
  const uint64_t data_base = data_file ? 0 : l.data_start;
  for (uint64_t t = 0; t < l.l2_clusters; ++t) {
    std::fill(buf.begin(), buf.end(), 0);
    for (uint64_t i = 0; i < per_l2_table; ++i) {
      uint64_t g = t * per_l2_table + i;
      if (g >= mapped) break;
      store_be64(buf.data() + l2e * i, ((data_base + g) * cs) | kOflagCopied);
    }
    CO_RETURN_IF_ERROR(co_await f.write((l.l2_start + t) * cs, buf.data(), cs));
  }
  // Data clusters read as zeros in every mode; falloc reserves them, full writes them.
  const uint64_t data_off = l.data_start * cs, data_len = l.data_clusters * cs;
  switch (opts.preallocation) {
    case Preallocation::kOff:
    case Preallocation::kMetadata:
      break;
    case Preallocation::kFalloc:
      if (data_len) CO_RETURN_IF_ERROR(co_await f.allocate(data_off, data_len));
      break;
    case Preallocation::kFull:
      CO_RETURN_IF_ERROR(co_await write_zeros_really(f, data_off, data_len));
      break;
  }
  CO_RETURN_IF_ERROR(co_await f.truncate(l.total * cs));
  // The header last: until it is written the file is not a qcow2 image.
  CO_RETURN_IF_ERROR(co_await f.flush());
  CO_RETURN_IF_ERROR(co_await f.write(0, header.data(), header.size()));
  CO_RETURN_IF_ERROR(co_await f.flush());
  co_return Status{};
}

}  // namespace img
