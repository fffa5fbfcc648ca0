// Helpers of the qcow2 layout layer (header rewrite rules, L2 entry decoding) shared by
// header.cc, create.cc, check*.cc and the driver. Built on format.h; see docs/qcow2-format.md.
//
// Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qcow2/format.h"

namespace img::qcow2 {

// Incompatible feature bits libimg understands (spec: "incompatible_features" bits 0-4).
constexpr uint64_t kKnownIncompatMask = kIncompatDirty | kIncompatCorrupt | kIncompatExternalData |
                                        kIncompatCompressionType | kIncompatExtendedL2;
// Autoclear bits libimg keeps across a header rewrite; unknown ones are dropped (spec:
// "autoclear_features": a writer that does not update a feature clears its bit). Bitmaps are not
// updated either, but kept: a writer marks every bitmap in_use before its first write
// (mark_bitmaps_in_use in bitmap.h), which says as much and keeps them listed, as QEMU leaves
// them after a crash.
constexpr uint64_t kKeptAutoclearMask = kAutoclearDataFileRaw | kAutoclearBitmaps;

// Byte offsets of header fields (spec: "Header"), for in-place single-field updates.
constexpr uint64_t kOffRefcountTableOffset = 48;  // followed by refcount_table_clusters at 56
constexpr uint64_t kOffIncompatibleFeatures = 72;
constexpr uint64_t kOffAutoclearFeatures = 88;

// The header as it must be written on the next rewrite: unknown autoclear bits cleared. Callers that rewrite the header encode this, not the header as read.
inline Header header_for_rewrite(const Header& h) {
  Header out = h;
  out.autoclear_features &= kKeptAutoclearMask;
  return out;
}

// True when the header carries autoclear bits that the next rewrite will clear.
inline bool needs_autoclear_rewrite(const Header& h) {
  return (h.autoclear_features & ~kKeptAutoclearMask) != 0;
}

// Compressed cluster descriptor (spec: "Compressed Clusters Descriptor"): with
// x = 62 - (cluster_bits - 8), bits 0..x-1 hold the host offset and bits x..61 the number of
// additional 512-byte sectors. The compressed data covers [offset, offset + size).
struct CompressedExtent {
  uint64_t offset;
  uint64_t size;
};
inline CompressedExtent decode_compressed_entry(uint64_t entry, uint32_t cluster_bits) {
  uint32_t x = 62 - (cluster_bits - 8);
  uint64_t offset = entry & ((1ull << x) - 1);
  uint64_t sectors = ((entry >> x) & ((1ull << (cluster_bits - 8)) - 1)) + 1;
  return {offset, sectors * 512 - (offset & 511)};
}

// Refcount blocks and refcount table clusters needed to count `clusters` clusters plus the
// blocks and the table themselves (placed after them): the fixed point of blocks covering
// everything including blocks and table. Converges in a few rounds (a block covers >= 64
// clusters).
struct RefcountStructure {
  uint64_t blocks = 1;
  uint64_t table_clusters = 1;
};
inline RefcountStructure refcount_structure_for(uint64_t clusters, const Header& h) {
  const uint64_t per_block = refcount_block_entries(h.cluster_bits, h.refcount_order);
  const uint64_t cs = h.cluster_size();
  RefcountStructure r;
  for (;;) {
    uint64_t nrb = div_round_up(clusters + r.blocks + r.table_clusters, per_block);
    uint64_t nrt = div_round_up(nrb * 8, cs);
    if (nrb <= r.blocks && nrt <= r.table_clusters) return r;
    r.blocks = std::max(r.blocks, nrb);
    r.table_clusters = std::max(r.table_clusters, nrt);
  }
}

// Bytes per L2 entry: 8, or 16 with extended L2 (spec: "Extended L2 Entries").
inline uint64_t l2_entry_bytes(const Header& h) { return h.has(kIncompatExtendedL2) ? 16 : 8; }
// Guest bytes one L2 table maps.
inline uint64_t l2_coverage(const Header& h) {
  return h.cluster_size() / l2_entry_bytes(h) * h.cluster_size();
}
// L1 entries needed for a virtual size.
inline uint64_t l1_entries_for(const Header& h, uint64_t size) {
  return div_round_up(size, l2_coverage(h));
}

}  // namespace img::qcow2
