// qcow2 on-disk format: constants, the header, and refcount entry access.
// The reference is qemu/qemu docs/interop/qcow2.rst ("the spec" below); section names are cited
// next to each layout. docs/qcow2-format.md summarises what libimg implements.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/bytes.h"
#include "img/file.h"
#include "img/status.h"
#include "img/task.h"

namespace img::qcow2 {

// --- Header (spec: "Header") ---
constexpr uint32_t kMagic = 0x514649fb;  // 'Q' 'F' 'I' 0xfb
constexpr uint32_t kV2HeaderLength = 72;
constexpr uint32_t kV3HeaderLength = 104;  // without the compression_type field (and padding)
constexpr uint32_t kV3HeaderLengthWithCompression = 112;
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
constexpr uint32_t kMaxBackingFileNameSize = 1023;

// Incompatible features (spec: "incompatible_features").
constexpr uint64_t kIncompatDirty = 1ull << 0;
constexpr uint64_t kIncompatCorrupt = 1ull << 1;
constexpr uint64_t kIncompatExternalData = 1ull << 2;
constexpr uint64_t kIncompatCompressionType = 1ull << 3;
constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
// Compatible features.
constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;
// Autoclear features.
constexpr uint64_t kAutoclearBitmaps = 1ull << 0;
constexpr uint64_t kAutoclearDataFileRaw = 1ull << 1;

// Header extension types (spec: "Header extensions").
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureNameTable = 0x6803f857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtFullDiskEncryption = 0x0537be77;
constexpr uint32_t kExtExternalDataFile = 0x44415441;

// --- L1/L2 entries (spec: "Cluster mapping") ---
constexpr uint64_t kOflagCopied = 1ull << 63;      // refcount is exactly one
constexpr uint64_t kOflagCompressed = 1ull << 62;  // L2 only
constexpr uint64_t kOflagZero = 1ull << 0;         // L2 only, v3: reads as zeros
constexpr uint64_t kL1OffsetMask = 0x00fffffffffffe00ull;   // bits 9-55
constexpr uint64_t kL2OffsetMask = 0x00fffffffffffe00ull;   // bits 9-55 (standard cluster)
constexpr uint64_t kL1ReservedMask = 0x7f000000000001ffull;  // must be zero
constexpr uint64_t kL2StdReservedMask = 0x3f000000000001feull;  // must be zero (bit 0 = zero flag)
constexpr uint64_t kRefTableOffsetMask = 0xfffffffffffffe00ull;  // bits 9-63
constexpr uint64_t kRefTableReservedMask = 0x1ffull;

// Limits QEMU applies, so that images QEMU refuses are refused here too, and hostile headers
// cannot make us allocate without bound.
constexpr uint64_t kMaxL1Bytes = 32ull << 20;             // QCOW_MAX_L1_SIZE
constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;   // QCOW_MAX_REFTABLE_SIZE
constexpr uint64_t kMaxSnapshots = 65536;
constexpr uint64_t kMaxImageSize = 1ull << 56;  // offsets are 56 bits wide in L2 entries

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

struct HeaderExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;  // virtual disk size in bytes
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;  // entries
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  // Version 3 (version 2 reads these as: no features, refcount_order 4, header_length 72).
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kV3HeaderLengthWithCompression;
  uint8_t compression_type = 0;  // 0 deflate, 1 zstd

  // From the extensions and the backing file name area.
  std::string backing_file;
  std::string backing_format;
  std::string external_data_file;
  std::vector<FeatureName> feature_names;
  // Extensions libimg does not interpret (bitmaps, encryption, unknown types): kept verbatim and
  // written back on every header rewrite, as the spec asks.
  std::vector<HeaderExtension> other_extensions;

  uint64_t cluster_size() const { return 1ull << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
  uint64_t l2_entries() const { return cluster_size() / 8; }
  bool has(uint64_t incompat_bit) const { return incompatible_features & incompat_bit; }
};

// The name of a feature bit from the image's feature-name table, or a generic name.
std::string feature_bit_name(const Header& h, uint8_t type, uint8_t bit);

// Reads and validates the header, extensions and backing file name from f. Every field is checked
// against the spec and against the file size; an error names the field.
Task<Result<Header>> read_header(File& f);

// Decodes from the first bytes of the file (at least the first cluster, or the whole file if it
// is shorter). Pure; read_header is this plus the I/O.
Result<Header> decode_header(std::span<const uint8_t> buf, uint64_t file_size);

// Encodes the header, extensions (backing format, feature names, external data file, then the
// preserved ones) and the backing file name into exactly cluster_size() bytes. Sets
// header_length, backing_file_offset and backing_file_size from the content.
Result<std::vector<uint8_t>> encode_header(Header& h);

// --- Refcount blocks (spec: "Host cluster management") ---
// refcount_order 0..6: entries of 1, 2, 4, 8, 16, 32, 64 bits. Sub-byte entries are packed from
// the least significant bit (QEMU's layout), wider ones are big-endian.
inline uint64_t get_refcount(const uint8_t* block, uint64_t i, uint32_t order) {
  switch (order) {
    case 0: return (block[i / 8] >> (i % 8)) & 1;
    case 1: return (block[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (block[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return block[i];
    case 4: return load_be16(block + 2 * i);
    case 5: return load_be32(block + 4 * i);
    default: return load_be64(block + 8 * i);
  }
}

inline void set_refcount(uint8_t* block, uint64_t i, uint32_t order, uint64_t v) {
  switch (order) {
    case 0: block[i / 8] = (block[i / 8] & ~(1u << (i % 8))) | ((v & 1) << (i % 8)); break;
    case 1: {
      unsigned sh = 2 * (i % 4);
      block[i / 4] = (block[i / 4] & ~(3u << sh)) | ((v & 3) << sh);
      break;
    }
    case 2: {
      unsigned sh = 4 * (i % 2);
      block[i / 2] = (block[i / 2] & ~(15u << sh)) | ((v & 15) << sh);
      break;
    }
    case 3: block[i] = static_cast<uint8_t>(v); break;
    case 4: store_be16(block + 2 * i, static_cast<uint16_t>(v)); break;
    case 5: store_be32(block + 4 * i, static_cast<uint32_t>(v)); break;
    default: store_be64(block + 8 * i, v); break;
  }
}

inline uint64_t max_refcount(uint32_t order) {
  return order >= 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
}

// Entries per refcount block: cluster_size * 8 / refcount_bits.
inline uint64_t refcount_block_entries(uint32_t cluster_bits, uint32_t order) {
  return (1ull << (cluster_bits + 3)) >> order;
}

}  // namespace img::qcow2
