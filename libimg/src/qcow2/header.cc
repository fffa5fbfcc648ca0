// qcow2 header: decode (with full validation), encode, and feature bit names.
// Spec: qemu/qemu docs/interop/qcow2.rst, sections "Header", "Header extensions", "Feature name
// table"; docs/qcow2-format.md lists the checks. Every error names the field and its value:
// kCorruption for a malformed image, kNotSupported for a valid image using something libimg lacks.
// The input is hostile: every length is bounded before use, nothing is allocated beyond one
// cluster (<= 2 MiB) plus the strings in it.

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "qcow2/format.h"
#include "qcow2/layout.h"

namespace img::qcow2 {
namespace {

constexpr uint32_t kFeatureNameEntry = 48;  // spec: "Feature name table", 48 bytes an entry

struct StdFeature {
  uint8_t type;
  uint8_t bit;
  const char* name;
};
// The names QEMU writes into the feature-name table (and uses when the image has none).
constexpr StdFeature kStdFeatures[] = {
    {0, 0, "dirty bit"},       {0, 1, "corrupt bit"},         {0, 2, "external data file"},
    {0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},         {2, 1, "raw external data"},
};

const char* type_name(uint8_t type) {
  switch (type) {
    case 0: return "incompatible";
    case 1: return "compatible";
    default: return "autoclear";
  }
}

// Offset ranges: [off, off+len) inside the file without overflow.
bool inside_file(uint64_t off, uint64_t len, uint64_t file_size) {
  return off <= file_size && len <= file_size - off;
}

Status check_table(const char* name, uint64_t off, uint64_t len, uint64_t cs, uint64_t file_size,
                   bool required) {
  if (!is_aligned(off, cs)) {
    return corruption(strfmt("%s 0x%" PRIx64 " is not aligned to the cluster size %" PRIu64, name,
                             off, cs));
  }
  if (!required) return {};
  if (off == 0) return corruption(strfmt("%s is 0 (overlaps the header cluster)", name));
  if (!inside_file(off, len, file_size)) {
    return corruption(strfmt("%s 0x%" PRIx64 " + %" PRIu64 " bytes lies past the end of the file (%" PRIu64
                             " bytes)",
                             name, off, len, file_size));
  }
  return {};
}

std::string cstring_field(const uint8_t* p, size_t max) {
  size_t n = 0;
  while (n < max && p[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

// Header extensions (spec: "Header extensions"): type (4), length (4), data padded to 8 bytes,
// ending with type 0. They lie between the header and `end` (the backing file name or the end of
// the first cluster).
Status decode_extensions(const uint8_t* c, uint64_t start, uint64_t end, Header& h) {
  uint64_t off = start;
  while (true) {
    // No room for another extension header: old images put the backing file name right after
    // the header with no end marker, which QEMU accepts.
    if (off + 8 > end) return {};
    uint32_t type = load_be32(c + off);
    uint32_t len = load_be32(c + off + 4);
    if (type == kExtEnd) return {};
    off += 8;
    if (len > end - off) {
      return corruption(strfmt("header extension 0x%08x length %u exceeds the extension area "
                               "(%" PRIu64 " bytes left)",
                               type, len, end - off));
    }
    const uint8_t* d = c + off;
    switch (type) {
      case kExtBackingFormat:
        if (len > kMaxBackingFileNameSize) {
          return corruption(strfmt("backing format extension length %u exceeds %u", len,
                                   kMaxBackingFileNameSize));
        }
        h.backing_format = cstring_field(d, len);
        break;
      case kExtFeatureNameTable:
        h.feature_names.clear();
        for (uint32_t i = 0; i + kFeatureNameEntry <= len; i += kFeatureNameEntry) {
          h.feature_names.push_back({d[i], d[i + 1], cstring_field(d + i + 2, 46)});
        }
        break;
      case kExtExternalDataFile:
        h.external_data_file = cstring_field(d, len);
        break;
      default:
        h.other_extensions.push_back({type, std::vector<uint8_t>(d, d + len)});
        break;
    }
    off += align_up(len, 8);
  }
}

}  // namespace

std::string feature_bit_name(const Header& h, uint8_t type, uint8_t bit) {
  for (const auto& f : h.feature_names) {
    if (f.type == type && f.bit == bit && !f.name.empty()) return f.name;
  }
  for (const auto& f : kStdFeatures) {
    if (f.type == type && f.bit == bit) return f.name;
  }
  return strfmt("unknown %s feature %u", type_name(type), bit);
}

Result<Header> decode_header(std::span<const uint8_t> buf, uint64_t file_size) {
  if (buf.size() < kV2HeaderLength) {
    return corruption(strfmt("file too short for a qcow2 header (%zu bytes, need %u)", buf.size(),
                             kV2HeaderLength));
  }
  const uint8_t* p = buf.data();
  Header h;
  uint32_t magic = load_be32(p);
  if (magic != kMagic) return corruption(strfmt("not a qcow2 image (bad magic 0x%08x)", magic));
  h.version = load_be32(p + 4);
  if (h.version != 2 && h.version != 3) {
    return not_supported(strfmt("unsupported qcow2 version %u", h.version));
  }
  h.backing_file_offset = load_be64(p + 8);
  h.backing_file_size = load_be32(p + 16);
  h.cluster_bits = load_be32(p + 20);
  h.size = load_be64(p + 24);
  h.crypt_method = load_be32(p + 32);
  h.l1_size = load_be32(p + 36);
  h.l1_table_offset = load_be64(p + 40);
  h.refcount_table_offset = load_be64(p + 48);
  h.refcount_table_clusters = load_be32(p + 56);
  h.nb_snapshots = load_be32(p + 60);
  h.snapshots_offset = load_be64(p + 64);

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return corruption(strfmt("cluster_bits %u out of range %u..%u", h.cluster_bits, kMinClusterBits,
                             kMaxClusterBits));
  }
  const uint64_t cs = h.cluster_size();

  if (h.version == 2) {
    h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
    h.refcount_order = 4;
    h.header_length = kV2HeaderLength;
    h.compression_type = 0;
  } else {
    if (buf.size() < kV3HeaderLength) {
      return corruption(strfmt("truncated version 3 header (%zu bytes, need %u)", buf.size(),
                               kV3HeaderLength));
    }
    h.incompatible_features = load_be64(p + 72);
    h.compatible_features = load_be64(p + 80);
    h.autoclear_features = load_be64(p + 88);
    h.refcount_order = load_be32(p + 96);
    h.header_length = load_be32(p + 100);
    if (h.header_length < kV3HeaderLength || h.header_length % 8 != 0 || h.header_length > cs) {
      return corruption(strfmt("header_length %u invalid (need >= %u, a multiple of 8, <= cluster "
                               "size %" PRIu64 ")",
                               h.header_length, kV3HeaderLength, cs));
    }
    if (buf.size() < h.header_length) {
      return corruption(strfmt("truncated header: header_length %u but only %zu bytes",
                               h.header_length, buf.size()));
    }
    h.compression_type = h.header_length > 104 ? p[104] : 0;
  }
  if (h.refcount_order > 6) {
    return corruption(strfmt("refcount_order %u out of range 0..6", h.refcount_order));
  }
  if (h.crypt_method != 0) {
    return not_supported(strfmt("crypt_method %u: encrypted images are not supported",
                                h.crypt_method));
  }

  // Everything from here reads inside the first cluster; bytes past the buffer (a file shorter
  // than one cluster) read as zeros, as they would from the file.
  std::vector<uint8_t> cluster(cs, 0);
  std::memcpy(cluster.data(), p, std::min<uint64_t>(buf.size(), cs));
  const uint8_t* c = cluster.data();

  // Backing file name (spec: "backing_file_offset", "backing_file_size").
  uint64_t ext_end = cs;
  if (h.backing_file_offset != 0) {
    if (h.backing_file_size > kMaxBackingFileNameSize) {
      return corruption(strfmt("backing_file_size %u exceeds %u", h.backing_file_size,
                               kMaxBackingFileNameSize));
    }
    // As QEMU: the name lies anywhere inside cluster 0, even over the header fields (such a name
    // just leaves no room for extensions).
    if (h.backing_file_offset > cs || h.backing_file_size > cs - h.backing_file_offset) {
      return corruption(strfmt("backing_file_offset 0x%" PRIx64 " (size %u) is not inside the "
                               "header cluster",
                               h.backing_file_offset, h.backing_file_size));
    }
    // A C string, as QEMU reads it: a NUL ends the name early (an empty name is no backing).
    h.backing_file = cstring_field(c + h.backing_file_offset, h.backing_file_size);
    ext_end = h.backing_file_offset;
  } else {
    h.backing_file_size = 0;
  }
  RETURN_IF_ERROR(decode_extensions(c, h.header_length, ext_end, h));

  // Feature bits (spec: "incompatible_features" ...). Unknown incompatible bits refuse the image;
  // unknown compatible bits are ignored; unknown autoclear bits are cleared on the next rewrite
  // (header_for_rewrite in layout.h).
  if (uint64_t unknown = h.incompatible_features & ~kKnownIncompatMask) {
    std::string msg;
    for (uint8_t bit = 0; bit < 64; ++bit) {
      if (!(unknown & (1ull << bit))) continue;
      if (!msg.empty()) msg += ", ";
      msg += strfmt("unsupported incompatible feature bit %u (%s)", bit,
                    feature_bit_name(h, 0, bit).c_str());
    }
    return not_supported(msg);
  }
  if (h.compression_type > 1) {
    return not_supported(strfmt("compression_type %u is unknown", h.compression_type));
  }
  if ((h.compression_type != 0) != h.has(kIncompatCompressionType)) {
    return corruption(strfmt("compression_type %u disagrees with incompatible feature bit 3",
                             h.compression_type));
  }

  if (h.size > kMaxImageSize) {
    return corruption(strfmt("size %" PRIu64 " exceeds the 2^56 byte limit", h.size));
  }
  // L1 table (spec: "l1_size", "l1_table_offset").
  if (uint64_t{h.l1_size} * 8 > kMaxL1Bytes) {
    return not_supported(strfmt("l1_size %u exceeds the 32 MiB L1 table limit", h.l1_size));
  }
  uint64_t l1_needed = l1_entries_for(h, h.size);
  if (h.l1_size < l1_needed) {
    return corruption(strfmt("l1_size %u too small for size %" PRIu64 " (needs %" PRIu64 ")",
                             h.l1_size, h.size, l1_needed));
  }
  RETURN_IF_ERROR(check_table("l1_table_offset", h.l1_table_offset, uint64_t{h.l1_size} * 8, cs,
                              file_size, h.l1_size > 0));
  // Refcount table (spec: "refcount_table_offset", "refcount_table_clusters").
  if (h.refcount_table_clusters == 0) {
    return corruption("refcount_table_clusters is 0 (an image has a refcount table)");
  }
  if (uint64_t{h.refcount_table_clusters} * cs > kMaxRefcountTableBytes) {
    return corruption(strfmt("refcount_table_clusters %u exceeds the 8 MiB refcount table limit",
                             h.refcount_table_clusters));
  }
  RETURN_IF_ERROR(check_table("refcount_table_offset", h.refcount_table_offset,
                              uint64_t{h.refcount_table_clusters} * cs, cs, file_size, true));
  // Snapshot table (spec: "nb_snapshots", "snapshots_offset"): entries are at least 40 bytes.
  if (h.nb_snapshots > kMaxSnapshots) {
    return corruption(strfmt("nb_snapshots %u exceeds %" PRIu64, h.nb_snapshots, kMaxSnapshots));
  }
  // Only the table's start must lie in the file: as QEMU (qcow2_validate_table), entries that
  // run past the end read as zeros, and check reports them ("entry N is incomplete").
  RETURN_IF_ERROR(check_table("snapshots_offset", h.snapshots_offset, 1, cs, file_size,
                              h.nb_snapshots > 0));
  return h;
}

Task<Result<Header>> read_header(File& f) {
  CO_ASSIGN_OR_RETURN(uint64_t file_size, f.size());
  // First the fixed part, to learn the cluster size; then the whole first cluster.
  std::vector<uint8_t> buf(std::min<uint64_t>(file_size, kV3HeaderLengthWithCompression));
  CO_RETURN_IF_ERROR(co_await f.read_exact(0, buf.data(), buf.size(), "qcow2 header"));
  if (buf.size() >= 24) {
    uint32_t bits = load_be32(buf.data() + 20);
    if (bits >= kMinClusterBits && bits <= kMaxClusterBits) {
      uint64_t n = std::min<uint64_t>(file_size, 1ull << bits);
      if (n > buf.size()) {
        buf.resize(n);
        CO_RETURN_IF_ERROR(co_await f.read_exact(0, buf.data(), n, "qcow2 header cluster"));
      }
    }
  }
  auto h = decode_header(buf, file_size);
  if (!h) h.error().prepend(f.name());
  co_return h;
}

Result<std::vector<uint8_t>> encode_header(Header& h) {
  if (h.version != 2 && h.version != 3) {
    return invalid_argument(strfmt("cannot encode qcow2 version %u", h.version));
  }
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return invalid_argument(strfmt("cannot encode cluster_bits %u", h.cluster_bits));
  }
  if (h.version == 2 && (h.refcount_order != 4 || h.incompatible_features ||
                         h.compatible_features || h.autoclear_features)) {
    return invalid_argument("version 2 images have 16-bit refcounts and no feature bits");
  }
  if (h.backing_file.size() > kMaxBackingFileNameSize) {
    return invalid_argument(strfmt("backing file name is %zu bytes, more than %u",
                                   h.backing_file.size(), kMaxBackingFileNameSize));
  }
  const uint64_t cs = h.cluster_size();
  h.header_length = h.version == 2 ? kV2HeaderLength : kV3HeaderLengthWithCompression;
  std::vector<uint8_t> out(cs, 0);
  uint8_t* p = out.data();
  uint64_t off = h.header_length;
  bool fits = true;
  auto put_ext = [&](uint32_t type, const void* data, uint64_t len) {
    if (off + 8 + align_up(len, 8) > cs) {
      fits = false;
      return;
    }
    store_be32(p + off, type);
    store_be32(p + off + 4, static_cast<uint32_t>(len));
    if (len) std::memcpy(p + off + 8, data, len);
    off += 8 + align_up(len, 8);
  };
  // Extensions in QEMU's order: backing format, external data file, feature names, the rest.
  if (!h.backing_format.empty()) {
    put_ext(kExtBackingFormat, h.backing_format.data(), h.backing_format.size());
  }
  if (!h.external_data_file.empty()) {
    put_ext(kExtExternalDataFile, h.external_data_file.data(), h.external_data_file.size());
  }
  // The feature name table takes 392 bytes or more, which with 512-byte clusters leaves no room
  // for a backing format and name; QEMU 7.2 (qcow2_update_header) writes it only for clusters
  // larger than 4 KiB, and so do we: small-cluster overlays can be created, headers match QEMU's.
  if (h.version >= 3 && cs > 4096) {
    // The standard names plus any the image carried for bits we do not know.
    std::vector<FeatureName> names;
    for (const auto& f : kStdFeatures) names.push_back({f.type, f.bit, f.name});
    for (const auto& f : h.feature_names) {
      bool std_bit = std::any_of(std::begin(kStdFeatures), std::end(kStdFeatures),
                                 [&](const StdFeature& s) { return s.type == f.type && s.bit == f.bit; });
      if (!std_bit) names.push_back(f);
    }
    std::vector<uint8_t> table(names.size() * kFeatureNameEntry, 0);
    for (size_t i = 0; i < names.size(); ++i) {
      uint8_t* e = table.data() + i * kFeatureNameEntry;
      e[0] = names[i].type;
      e[1] = names[i].bit;
      std::memcpy(e + 2, names[i].name.data(), std::min<size_t>(names[i].name.size(), 46));
    }
    put_ext(kExtFeatureNameTable, table.data(), table.size());
  }
  for (const auto& e : h.other_extensions) put_ext(e.type, e.data.data(), e.data.size());
  put_ext(kExtEnd, nullptr, 0);
  if (!fits || off + h.backing_file.size() > cs) {
    return invalid_argument(strfmt("header extensions and backing file name do not fit in one "
                                   "%" PRIu64 "-byte cluster",
                                   cs));
  }
  if (!h.backing_file.empty()) {
    h.backing_file_offset = off;
    h.backing_file_size = static_cast<uint32_t>(h.backing_file.size());
    std::memcpy(p + off, h.backing_file.data(), h.backing_file.size());
  } else {
    h.backing_file_offset = 0;
    h.backing_file_size = 0;
  }

  store_be32(p, kMagic);
  store_be32(p + 4, h.version);
  store_be64(p + 8, h.backing_file_offset);
  store_be32(p + 16, h.backing_file_size);
  store_be32(p + 20, h.cluster_bits);
  store_be64(p + 24, h.size);
  store_be32(p + 32, h.crypt_method);
  store_be32(p + 36, h.l1_size);
  store_be64(p + 40, h.l1_table_offset);
  store_be64(p + 48, h.refcount_table_offset);
  store_be32(p + 56, h.refcount_table_clusters);
  store_be32(p + 60, h.nb_snapshots);
  store_be64(p + 64, h.snapshots_offset);
  if (h.version >= 3) {
    store_be64(p + 72, h.incompatible_features);
    store_be64(p + 80, h.compatible_features);
    store_be64(p + 88, h.autoclear_features);
    store_be32(p + 96, h.refcount_order);
    store_be32(p + 100, h.header_length);
    p[104] = h.compression_type;
  }
  return out;
}

}  // namespace img::qcow2
