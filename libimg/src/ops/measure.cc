// qemu-img measure's arithmetic (qemu 7.2 block/qcow2.c qcow2_measure). The formulas are
// described in docs/img-inspect.md.
#include "img/measure.h"

#include <bit>

namespace img {
namespace {

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
uint64_t div_up(uint64_t v, uint64_t by) { return (v + by - 1) / by; }

// The refcount table and blocks that count `clusters` clusters and themselves: the fixed point
// of blocks = ceil((clusters + table + blocks) / per_block), table = ceil(blocks / per_table).
uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_bits) {
  const uint64_t per_table = cluster_size / 8;
  const uint64_t per_block = cluster_size * 8 / refcount_bits;
  uint64_t table = 0, blocks = 0, n = 0, last = 0;
  do {
    last = n;
    blocks = div_up(clusters + table + blocks, per_block);
    table = div_up(blocks, per_table);
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cluster_size;
}

}  // namespace

uint64_t qcow2_prealloc_size(uint64_t virtual_size, uint64_t cluster_size, unsigned refcount_bits,
                             bool extended_l2) {
  const uint64_t aligned = round_up(virtual_size, cluster_size);
  const uint64_t l2e = extended_l2 ? 16 : 8;
  uint64_t meta = cluster_size;  // the header
  uint64_t nl2e = round_up(aligned / cluster_size, cluster_size / l2e);
  meta += nl2e * l2e;
  uint64_t nl1e = round_up(nl2e * l2e / cluster_size, cluster_size / 8);
  meta += nl1e * 8;
  meta += refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_bits);
  return meta + aligned;
}

Result<MeasureOptions> to_measure_options(const std::string& format, const CreateOptionList& list) {
  MeasureOptions o;
  o.format = format;
  if (auto v = list.find("size")) o.size = std::stoull(*v);
  if (auto v = list.find("preallocation")) {
    // raw checks its preallocation mode when it creates, not when it measures.
    if (format == "raw") return o;
    if (*v == "off") {
      o.preallocation = Preallocation::kOff;
    } else if (*v == "metadata") {
      o.preallocation = Preallocation::kMetadata;
    } else if (*v == "falloc") {
      o.preallocation = Preallocation::kFalloc;
    } else if (*v == "full") {
      o.preallocation = Preallocation::kFull;
    } else {
      return invalid_argument("invalid parameter value: " + *v);
    }
  }
  if (format != "qcow2") return o;
  // qcow2_measure's order: extended_l2, cluster_size, compat, refcount_bits, preallocation.
  MeasureOptions q = o;
  if (auto v = list.find("extended_l2")) {
    if (*v != "on" && *v != "off") {
      return invalid_argument("Parameter 'extended_l2' expects 'on' or 'off'");
    }
    q.extended_l2 = *v == "on";
  }
  if (auto v = list.find("cluster_size")) {
    uint64_t cs = std::stoull(*v);
    if (cs < 512 || cs > (2u << 20) || !std::has_single_bit(cs)) {
      return invalid_argument("Cluster size must be a power of two between 512 and 2048k");
    }
    q.cluster_size = static_cast<uint32_t>(cs);
  }
  if (q.extended_l2 && q.cluster_size < 16384) {
    return invalid_argument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (auto v = list.find("compat")) {
    if (*v == "0.10" || *v == "v2") {
      q.version = 2;
    } else if (*v == "1.1" || *v == "v3") {
      q.version = 3;
    } else {
      return invalid_argument("Invalid compatibility level: '" + *v + "'");
    }
  }
  if (auto v = list.find("refcount_bits")) {
    char* end = nullptr;
    unsigned long long bits = std::strtoull(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') {
      return invalid_argument("Parameter 'refcount_bits' expects a number");
    }
    if (bits == 0 || bits > 64 || !std::has_single_bit(bits)) {
      return invalid_argument("Refcount width must be a power of two and may not exceed 64 bits");
    }
    q.refcount_bits = static_cast<uint32_t>(bits);
  }
  if (q.version < 3 && q.refcount_bits != 16) {
    return invalid_argument(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
        "compat=1.1 or greater)");
  }
  q.has_backing_file = list.find("backing_file") != nullptr;
  return q;
}

uint64_t qcow2_bitmaps_size(const std::vector<BitmapInfo>& bitmaps, uint64_t disk_size,
                            uint64_t cluster_size) {
  uint64_t total = 0, dir = 0;
  for (const BitmapInfo& b : bitmaps) {
    if (b.granularity == 0) continue;  // the directory decoder allows none such
    const uint64_t bytes = div_up(div_up(disk_size, b.granularity), 8);
    const uint64_t clusters = div_up(bytes, cluster_size);
    total += clusters * cluster_size;                  // the whole bitmap, as if all set
    total += round_up(clusters * 8, cluster_size);     // its bitmap table
    dir += round_up(24 + uint64_t{b.name.size()}, 8);  // its directory entry, no extra data
  }
  return total + round_up(dir, cluster_size);
}

Task<Result<MeasureResult>> measure(const MeasureOptions& opts, ChainMapper* source,
                                    uint64_t source_size, bool source_has_bitmap_support,
                                    const std::vector<BitmapInfo>& source_bitmaps) {
  MeasureResult r;
  if (opts.format == "raw") {
    r.required = r.fully_allocated = round_up(source ? source_size : opts.size, 512);
    co_return r;
  }
  const uint64_t cs = opts.cluster_size;
  uint64_t virtual_size = round_up(opts.size, cs);
  const uint64_t l2e = opts.extended_l2 ? 16 : 8;
  // QCOW_MAX_L1_SIZE: 32 MiB of L1 entries.
  if (div_up(virtual_size / cs, cs / l2e) * 8 > (32u << 20)) {
    co_return invalid_argument("The image size is too large (try using a larger cluster size)");
  }
  uint64_t required = 0;
  if (source) {
    virtual_size = round_up(source_size, cs);
    if (opts.has_backing_file) {
      // The new image's backing file may share nothing with the source: count everything.
      required = virtual_size;
    } else {
      for (uint64_t off = 0; off < source_size;) {
        CO_ASSIGN_OR_RETURN(ChainStatus st, co_await source->status(off, source_size - off));
        uint64_t n = st.length;
        if (!st.zero && st.data && st.allocated) {
          // The run's clusters count whole; the next query starts at a cluster boundary.
          n = round_up(off + n, cs) - off;
          required += off % cs + n;
        }
        off += n;
      }
    }
  }
  if (opts.preallocation == Preallocation::kFull || opts.preallocation == Preallocation::kFalloc) {
    required = virtual_size;
  }
  r.fully_allocated = qcow2_prealloc_size(virtual_size, cs, opts.refcount_bits, opts.extended_l2);
  // Metadata of the fully allocated image still counts: qemu's overestimate, kept.
  r.required = r.fully_allocated - virtual_size + required;
  r.has_bitmaps = opts.version >= 3 && source && source_has_bitmap_support;
  if (r.has_bitmaps) r.bitmaps = qcow2_bitmaps_size(source_bitmaps, source_size, cs);
  co_return r;
}

}  // namespace img
