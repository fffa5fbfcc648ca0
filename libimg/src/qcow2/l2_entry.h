// L2Entry: one decoded L2 table entry (spec: "Cluster mapping", "Standard Cluster Descriptor",
// "Compressed Clusters Descriptor"). Every path that reads a mapping (read, write, zero, discard,
// block_status, check) switches on L2Entry::kind instead of testing flag bits by hand, as QEMU's
// qcow2_get_subcluster_type() does; extended L2 (128-bit entries with subcluster bitmaps) then
// changes decode_l2() and encode_*(), not every caller.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "qcow2/format.h"
#include "qcow2/layout.h"

namespace img::qcow2 {

// Extended L2 entries (spec: "Extended L2 Entries"): 128 bits, the standard descriptor (whose
// bit 0, the zero flag, is unused) followed by a 64-bit subcluster bitmap: bits 0-31 say
// subcluster x is allocated, bits 32-63 that it reads as zeros. 32 subclusters per cluster.
constexpr unsigned kSubclusters = 32;
constexpr uint64_t kBitmapAllAlloc = 0xffffffffull;
constexpr uint64_t kBitmapAllZero = 0xffffffffull << 32;
// Bitmap bits for subclusters [a, b) (0 <= a <= b <= 32).
inline uint64_t alloc_range(unsigned a, unsigned b) {
  return b - a == 32 ? kBitmapAllAlloc : ((1ull << (b - a)) - 1) << a;
}
inline uint64_t zero_range(unsigned a, unsigned b) { return alloc_range(a, b) << 32; }

// What a cluster (or, with extended L2, one subcluster) holds.
enum class ClusterKind {
  kUnallocated,  // no data here: reads from the backing file, or zeros without one
  kZeroPlain,    // zero flag, no host cluster
  kZeroAlloc,    // zero flag with a host cluster kept allocated (reads as zeros)
  kNormal,       // data in the host cluster at host_offset
  kCompressed,   // compressed data at [host_offset, host_offset + compressed_size)
};

// One L2 entry as stored: the standard descriptor and, with extended L2, the bitmap.
struct RawL2 {
  uint64_t entry = 0;
  uint64_t bitmap = 0;
  bool operator==(const RawL2&) const = default;
};

struct L2Entry {
  // The cluster as a whole. With extended L2 only kUnallocated (no host cluster), kNormal (a
  // host cluster; its subclusters may be data, zeros or unallocated) or kCompressed, as QEMU's
  // qcow2_get_cluster_type(); sub_kind() says what each subcluster holds.
  ClusterKind kind = ClusterKind::kUnallocated;
  // kNormal and kZeroAlloc: the host cluster (cluster aligned). kCompressed: the byte offset of
  // the compressed data. 0 otherwise.
  uint64_t host_offset = 0;
  // kCompressed: bytes the descriptor covers (the data may be shorter, never longer).
  uint64_t compressed_size = 0;
  // The COPIED flag: the host cluster's refcount is exactly one (never set for compressed).
  bool copied = false;
  uint64_t raw = 0;
  uint64_t bitmap = 0;    // extended L2: the subcluster bitmap; 0 otherwise
  bool extended = false;  // decoded from an extended entry

  bool is_zero() const { return kind == ClusterKind::kZeroPlain || kind == ClusterKind::kZeroAlloc; }
  // The entry holds a host cluster of its own (normal or zero-allocated).
  bool has_host_cluster() const {
    return kind == ClusterKind::kNormal || kind == ClusterKind::kZeroAlloc;
  }
  // Data is written in place: a normal cluster that this image alone references (with extended
  // L2, every subcluster written must be allocated too: see sub_kind).
  bool writable_in_place() const { return kind == ClusterKind::kNormal && copied; }
  RawL2 raw_l2() const { return {raw, bitmap}; }

  // What subcluster sc holds (QEMU's qcow2_get_subcluster_type()). Without extended L2 a
  // cluster is one subcluster: the cluster's kind. REQUIRES a decoded entry without defect.
  ClusterKind sub_kind(unsigned sc) const {
    if (!extended || kind == ClusterKind::kCompressed) return kind;
    const bool zero = (bitmap >> (32 + sc)) & 1;
    if (kind == ClusterKind::kNormal) {
      if (zero) return ClusterKind::kZeroAlloc;
      return (bitmap >> sc) & 1 ? ClusterKind::kNormal : ClusterKind::kUnallocated;
    }
    return zero ? ClusterKind::kZeroPlain : ClusterKind::kUnallocated;
  }
  // The end of the run of subclusters from sc on that read alike (data, zeros, or unallocated);
  // kSubclusters, or 1 without extended L2, at most.
  unsigned sub_run_end(unsigned sc) const {
    if (!extended || kind == ClusterKind::kCompressed) return extended ? kSubclusters : 1;
    auto cls = [&](unsigned i) {
      ClusterKind k = sub_kind(i);
      return k == ClusterKind::kZeroAlloc ? ClusterKind::kZeroPlain : k;
    };
    const ClusterKind k = cls(sc);
    unsigned e = sc + 1;
    while (e < kSubclusters && cls(e) == k) ++e;
    return e;
  }
};

// What decode_l2 found wrong with an entry (kNone: valid).
enum class L2Defect {
  kNone,
  kReservedBits,  // bits the spec says must be zero (incl. the zero flag on version 2)
  kUnaligned,     // a standard descriptor's host offset is not cluster aligned
  // Extended L2: a subcluster both allocated and zero, in a cluster with a host cluster.
  kAllocAndZero,
  kUnallocatedAlloc,  // extended L2: allocation bits on an entry without a host cluster
  kCompressedBitmap,  // extended L2: a compressed cluster's bitmap is not zero
};

struct L2Decoded {
  L2Entry entry;
  L2Defect defect = L2Defect::kNone;
};

// Decodes a raw (host-endian) L2 entry of an image with the given cluster size and version;
// `bitmap` is the second half of an extended entry (extended L2), ignored otherwise. A defective
// entry still decodes as far as it can (for check's messages). data_file: the image keeps its
// data in an external data file, where 0 is a valid host offset: spec "Standard Cluster
// Descriptor", "The offset may only be 0 with bit 63 set (indicating a host cluster offset of 0)
// when an external data file is used" (QEMU's qcow2_get_cluster_type; a zero flag with offset 0
// stays a plain zero cluster there too).
inline L2Decoded decode_l2(uint64_t raw, uint32_t cluster_bits, uint32_t version,
                           bool extended = false, uint64_t bitmap = 0, bool data_file = false) {
  L2Decoded d;
  L2Entry& e = d.entry;
  e.raw = raw;
  e.extended = extended;
  e.bitmap = extended ? bitmap : 0;
  e.copied = raw & kOflagCopied;
  if (raw & kOflagCompressed) {
    CompressedExtent ext = decode_compressed_entry(raw, cluster_bits);
    e.kind = ClusterKind::kCompressed;
    e.host_offset = ext.offset;
    e.compressed_size = ext.size;
    // "Reserved (set to 0)": compressed clusters have no subclusters.
    if (e.bitmap) d.defect = L2Defect::kCompressedBitmap;
    return d;
  }
  uint64_t reserved = kL2StdReservedMask | (version < 3 ? kOflagZero : 0);
  if (raw & reserved) d.defect = L2Defect::kReservedBits;
  uint64_t off = raw & kL2OffsetMask;
  if (off != 0 && (off & ((1ull << cluster_bits) - 1))) {
    if (d.defect == L2Defect::kNone) d.defect = L2Defect::kUnaligned;
  }
  e.host_offset = off;
  const bool host = off != 0 || (data_file && e.copied);
  if (extended) {
    // Bit 0 has no meaning with extended entries ("always 0"; QEMU ignores it): zeros are in
    // the bitmap. "1: the subcluster reads as zeros. In this case the allocation status bit
    // must be unset"; an unallocated cluster has no allocated subclusters.
    e.kind = host ? ClusterKind::kNormal : ClusterKind::kUnallocated;
    if (d.defect == L2Defect::kNone) {
      if (host && ((e.bitmap >> 32) & e.bitmap)) d.defect = L2Defect::kAllocAndZero;
      if (!host && (e.bitmap & kBitmapAllAlloc)) d.defect = L2Defect::kUnallocatedAlloc;
    }
    return d;
  }
  bool zero = version >= 3 && (raw & kOflagZero);
  if (zero) {
    e.kind = off ? ClusterKind::kZeroAlloc : ClusterKind::kZeroPlain;
  } else {
    e.kind = host ? ClusterKind::kNormal : ClusterKind::kUnallocated;
  }
  return d;
}

// decode_l2's answer for the common entry of a standard (not extended) L2 table, for the passes
// over whole tables: true with *host (0: unallocated) for an entry that is neither compressed
// nor zero, with no reserved bit set and an aligned offset; false where decode_l2 must look.
inline bool plain_host(uint64_t raw, uint64_t cluster_mask, uint64_t* host) {
  if (raw & (kOflagCompressed | kOflagZero | kL2StdReservedMask)) return false;
  *host = raw & kL2OffsetMask;
  return (*host & cluster_mask) == 0;
}

// Raw entries for each kind (host-endian). With extended L2 the whole cluster is data
// (encode_normal) or zeros (encode_zero); the bitmap is 0 without extended L2.
inline RawL2 encode_normal(uint64_t host, bool copied, bool extended = false) {
  return {host | (copied ? kOflagCopied : 0), extended ? kBitmapAllAlloc : 0};
}
inline RawL2 encode_zero(uint64_t host, bool copied, bool extended = false) {
  uint64_t e = host | (host && copied ? kOflagCopied : 0);
  if (extended) return {e, kBitmapAllZero};
  return {e | kOflagZero, 0};
}
// A compressed descriptor for `size` bytes at byte offset `host` (size >= 1).
inline RawL2 encode_compressed(uint64_t host, uint64_t size, uint32_t cluster_bits) {
  uint32_t x = 62 - (cluster_bits - 8);
  uint64_t end_sector = (host + size - 1) >> 9;
  uint64_t extra_sectors = end_sector - (host >> 9);
  return {kOflagCompressed | (extra_sectors << x) | host, 0};
}

// Entry i of an L2 table with entries of `bytes` (8 or 16) bytes each, big-endian.
inline RawL2 load_l2(const uint8_t* table, uint64_t i, uint64_t bytes) {
  const uint8_t* p = table + i * bytes;
  return {load_be64(p), bytes == 16 ? load_be64(p + 8) : 0};
}
inline void store_l2(uint8_t* table, uint64_t i, uint64_t bytes, RawL2 v) {
  uint8_t* p = table + i * bytes;
  store_be64(p, v.entry);
  if (bytes == 16) store_be64(p + 8, v.bitmap);
}

}  // namespace img::qcow2
