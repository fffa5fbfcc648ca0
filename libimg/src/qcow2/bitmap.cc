// Bitmap directory decoding (spec: "Bitmaps extension", "Bitmap directory"); see bitmap.h.

#include "qcow2/bitmap.h"

#include <cinttypes>

namespace img::qcow2 {

const HeaderExtension* find_bitmaps_extension(const Header& h) {
  for (const HeaderExtension& e : h.other_extensions) {
    if (e.type == kExtBitmaps) return &e;
  }
  return nullptr;
}

Result<BitmapsExtension> decode_bitmaps_extension(std::span<const uint8_t> d, const Header& h,
                                                  uint64_t file_size) {
  if (d.size() < kBitmapExtensionSize) {
    return corruption(
        strfmt("bitmaps extension is %zu bytes, need %u", d.size(), kBitmapExtensionSize));
  }
  BitmapsExtension e;
  e.nb_bitmaps = load_be32(d.data());
  uint32_t reserved = load_be32(d.data() + 4);
  e.directory_size = load_be64(d.data() + 8);
  e.directory_offset = load_be64(d.data() + 16);
  if (reserved != 0) return corruption("bitmaps extension: reserved field is not zero");
  if (e.nb_bitmaps == 0) return corruption("bitmaps extension: nb_bitmaps is 0");
  if (e.nb_bitmaps > kMaxBitmaps) {
    return corruption(
        strfmt("bitmaps extension: nb_bitmaps %u exceeds %u", e.nb_bitmaps, kMaxBitmaps));
  }
  if (e.directory_size < uint64_t{e.nb_bitmaps} * kBitmapDirEntryFixedSize ||
      e.directory_size > kMaxBitmapDirectorySize) {
    return corruption(strfmt("bitmaps extension: bitmap_directory_size %" PRIu64
                             " invalid for %u bitmaps",
                             e.directory_size, e.nb_bitmaps));
  }
  if (e.directory_offset == 0 || !is_aligned(e.directory_offset, h.cluster_size())) {
    return corruption(strfmt("bitmaps extension: bitmap_directory_offset 0x%" PRIx64
                             " is not a cluster-aligned offset after the header",
                             e.directory_offset));
  }
  if (e.directory_offset > file_size || e.directory_size > file_size - e.directory_offset) {
    return corruption(strfmt("bitmaps extension: bitmap directory at 0x%" PRIx64 " (%" PRIu64
                             " bytes) lies past the end of the file",
                             e.directory_offset, e.directory_size));
  }
  return e;
}

Result<std::vector<BitmapDirEntry>> decode_bitmap_directory(std::span<const uint8_t> dir,
                                                            uint32_t nb_bitmaps, const Header& h) {
  std::vector<BitmapDirEntry> out;
  const uint64_t cs = h.cluster_size();
  uint64_t off = 0;
  for (uint32_t i = 0; i < nb_bitmaps; ++i) {
    if (dir.size() - off < kBitmapDirEntryFixedSize) {
      return corruption(strfmt("bitmap directory entry %u lies past the end of the directory", i));
    }
    const uint8_t* p = dir.data() + off;
    BitmapDirEntry e;
    e.entry_offset = off;
    e.table_offset = load_be64(p);
    e.table_size = load_be32(p + 8);
    e.flags = load_be32(p + 12);
    e.type = p[16];
    e.granularity_bits = p[17];
    uint32_t name_size = load_be16(p + 18);
    uint32_t extra = load_be32(p + 20);
    const uint64_t len = align_up(uint64_t{kBitmapDirEntryFixedSize} + extra + name_size, 8);
    if (extra > kMaxBitmapDirectorySize || len > dir.size() - off) {
      return corruption(strfmt("bitmap directory entry %u lies past the end of the directory", i));
    }
    e.name.assign(reinterpret_cast<const char*>(p + kBitmapDirEntryFixedSize + extra), name_size);
    auto bad = [&](const char* what) {
      return corruption(strfmt("bitmap directory entry %u ('%s'): %s", i, e.name.c_str(), what));
    };
    if (name_size == 0 || name_size > kMaxBitmapNameSize) return bad("name size out of range");
    if (e.flags & ~kBitmapFlagsKnown) return bad("reserved flag bits are set");
    if (e.type != kBitmapTypeDirtyTracking) return bad("unknown bitmap type");
    if (e.granularity_bits < kMinBitmapGranularityBits ||
        e.granularity_bits > kMaxBitmapGranularityBits) {
      return bad("granularity_bits out of range 9..31");
    }
    // Spec: extra data the reader does not understand makes the bitmap unusable unless
    // extra_data_compatible is set; QEMU defines none, so any is refused.
    if (extra != 0) return bad("extra data is not supported");
    if (e.table_size == 0 || e.table_size > kMaxBitmapTableEntries ||
        uint64_t{e.table_size} * cs > kMaxBitmapPhysBytes) {
      return bad("bitmap table size out of range");
    }
    if (e.table_offset == 0 || !is_aligned(e.table_offset, cs)) {
      return bad("bitmap table offset is not cluster aligned");
    }
    // The table's data clusters, one bit per granule, must cover the virtual size.
    // table_size * cs <= 512 MiB and granularity_bits <= 31: no overflow below 2^63.
    const uint64_t covered = (uint64_t{e.table_size} * cs * 8) << e.granularity_bits;
    if (covered < h.size) return bad("bitmap table too small for the virtual size");
    out.push_back(std::move(e));
    off += len;
  }
  if (off != dir.size()) {
    return corruption(strfmt("bitmap directory is %zu bytes but its %u entries fill %" PRIu64,
                             dir.size(), nb_bitmaps, off));
  }
  return out;
}

Task<Result<std::vector<BitmapDirEntry>>> read_bitmap_directory(File& f, const Header& h,
                                                                std::vector<uint8_t>* raw,
                                                                BitmapsExtension* ext_out) {
  const HeaderExtension* ext = find_bitmaps_extension(h);
  if (!ext || h.version < 3 || !(h.autoclear_features & kAutoclearBitmaps)) {
    co_return std::vector<BitmapDirEntry>{};
  }
  CO_ASSIGN_OR_RETURN(uint64_t file_size, f.size());
  CO_ASSIGN_OR_RETURN(BitmapsExtension be, decode_bitmaps_extension(ext->data, h, file_size));
  std::vector<uint8_t> dir(be.directory_size);  // <= 64 MiB, inside the file
  CO_RETURN_IF_ERROR(
      co_await f.read_exact(be.directory_offset, dir.data(), dir.size(), "bitmap directory"));
  CO_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> entries,
                      decode_bitmap_directory(dir, be.nb_bitmaps, h));
  if (raw) *raw = std::move(dir);
  if (ext_out) *ext_out = be;
  co_return entries;
}

Task<Status> mark_bitmaps_in_use(File& f, const Header& h) {
  std::vector<uint8_t> dir;
  BitmapsExtension be;
  CO_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> entries,
                      co_await read_bitmap_directory(f, h, &dir, &be));
  bool changed = false;
  for (const BitmapDirEntry& e : entries) {
    if (e.flags & kBitmapFlagInUse) continue;
    store_be32(dir.data() + e.entry_offset + kBitmapEntryFlagsOffset, e.flags | kBitmapFlagInUse);
    changed = true;
  }
  if (!changed) co_return Status{};
  CO_RETURN_IF_ERROR(co_await f.write(be.directory_offset, dir.data(), dir.size()));
  co_return co_await f.flush();
}

}  // namespace img::qcow2
