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

enum class ClusterKind {
  kUnallocated,  // no host cluster: reads from the backing file, or zeros without one
  kZeroPlain,    // zero flag, no host cluster
  kZeroAlloc,    // zero flag with a host cluster kept allocated (reads as zeros)
  kNormal,       // data in the host cluster at host_offset
  kCompressed,   // compressed data at [host_offset, host_offset + compressed_size)
};

struct L2Entry {
  ClusterKind kind = ClusterKind::kUnallocated;
  // kNormal and kZeroAlloc: the host cluster (cluster aligned). kCompressed: the byte offset of
  // the compressed data. 0 otherwise.
  uint64_t host_offset = 0;
  // kCompressed: bytes the descriptor covers (the data may be shorter, never longer).
  uint64_t compressed_size = 0;
  // The COPIED flag: the host cluster's refcount is exactly one (never set for compressed).
  bool copied = false;
  uint64_t raw = 0;

  bool is_zero() const { return kind == ClusterKind::kZeroPlain || kind == ClusterKind::kZeroAlloc; }
  // The entry holds a host cluster of its own (normal or zero-allocated).
  bool has_host_cluster() const {
    return kind == ClusterKind::kNormal || kind == ClusterKind::kZeroAlloc;
  }
  // Data is written in place: a normal cluster that this image alone references.
  bool writable_in_place() const { return kind == ClusterKind::kNormal && copied; }
};

// What decode_l2 found wrong with an entry (kNone: valid).
enum class L2Defect {
  kNone,
  kReservedBits,  // bits the spec says must be zero (incl. the zero flag on version 2)
  kUnaligned,     // a standard descriptor's host offset is not cluster aligned
};

struct L2Decoded {
  L2Entry entry;
  L2Defect defect = L2Defect::kNone;
};

// Decodes a raw (host-endian) 64-bit L2 entry of an image with the given cluster size and
// version. A defective entry still decodes as far as it can (for check's messages).
inline L2Decoded decode_l2(uint64_t raw, uint32_t cluster_bits, uint32_t version) {
  L2Decoded d;
  L2Entry& e = d.entry;
  e.raw = raw;
  e.copied = raw & kOflagCopied;
  if (raw & kOflagCompressed) {
    CompressedExtent ext = decode_compressed_entry(raw, cluster_bits);
    e.kind = ClusterKind::kCompressed;
    e.host_offset = ext.offset;
    e.compressed_size = ext.size;
    return d;
  }
  uint64_t reserved = kL2StdReservedMask | (version < 3 ? kOflagZero : 0);
  if (raw & reserved) d.defect = L2Defect::kReservedBits;
  uint64_t off = raw & kL2OffsetMask;
  if (off != 0 && (off & ((1ull << cluster_bits) - 1))) {
    if (d.defect == L2Defect::kNone) d.defect = L2Defect::kUnaligned;
  }
  e.host_offset = off;
  bool zero = version >= 3 && (raw & kOflagZero);
  if (zero) {
    e.kind = off ? ClusterKind::kZeroAlloc : ClusterKind::kZeroPlain;
  } else {
    e.kind = off ? ClusterKind::kNormal : ClusterKind::kUnallocated;
  }
  return d;
}

// Raw entries for each kind (host-endian).
inline uint64_t encode_normal(uint64_t host, bool copied) {
  return host | (copied ? kOflagCopied : 0);
}
inline uint64_t encode_zero(uint64_t host, bool copied) {
  return host | kOflagZero | (host && copied ? kOflagCopied : 0);
}
// A compressed descriptor for `size` bytes at byte offset `host` (size >= 1).
inline uint64_t encode_compressed(uint64_t host, uint64_t size, uint32_t cluster_bits) {
  uint32_t x = 62 - (cluster_bits - 8);
  uint64_t end_sector = (host + size - 1) >> 9;
  uint64_t extra_sectors = end_sector - (host >> 9);
  return kOflagCompressed | (extra_sectors << x) | host;
}

}  // namespace img::qcow2
