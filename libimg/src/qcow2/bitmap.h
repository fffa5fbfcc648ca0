// Persistent dirty bitmaps (spec: qemu/qemu docs/interop/qcow2.rst, "Bitmaps", "Bitmaps
// extension", "Bitmap directory", "Bitmap table"). libimg does not update bitmap contents; it
// decodes the directory so that check counts the bitmaps' clusters as referenced, so that a
// writer can mark every bitmap in_use (possibly inconsistent) before it changes guest data
// instead of dropping them, and so that bitmap_edit.cc can add, remove, clear, enable and disable
// bitmaps (qemu-img bitmap). The decoders are pure functions over bytes (fuzz targets call them
// directly); every field is checked, every length bounded before use.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "img/file.h"
#include "img/status.h"
#include "img/task.h"
#include "qcow2/format.h"

namespace img::qcow2 {

// Limits QEMU applies (block/qcow2.h, qcow2-bitmap.c), so hostile values cannot make us allocate
// without bound and images QEMU refuses are refused here too.
constexpr uint32_t kMaxBitmaps = 65535;                        // QCOW2_MAX_BITMAPS
constexpr uint64_t kMaxBitmapDirectorySize = 1024ull * 65535;  // QCOW2_MAX_BITMAP_DIRECTORY_SIZE
constexpr uint32_t kMaxBitmapTableEntries = 0x8000000;         // BME_MAX_TABLE_SIZE
constexpr uint64_t kMaxBitmapPhysBytes = 0x20000000;  // BME_MAX_PHYS_SIZE: 512 MiB of bitmap data
constexpr uint32_t kMaxBitmapNameSize = 1023;                  // BME_MAX_NAME_SIZE
constexpr uint32_t kMinBitmapGranularityBits = 9;
constexpr uint32_t kMaxBitmapGranularityBits = 31;

constexpr uint32_t kBitmapExtensionSize = 24;
constexpr uint32_t kBitmapDirEntryFixedSize = 24;
// Directory entry flags (spec: "Bitmap directory", bytes 12-15).
constexpr uint32_t kBitmapFlagInUse = 1u << 0;
constexpr uint32_t kBitmapFlagAuto = 1u << 1;
constexpr uint32_t kBitmapFlagExtraDataCompatible = 1u << 2;
constexpr uint32_t kBitmapFlagsKnown =
    kBitmapFlagInUse | kBitmapFlagAuto | kBitmapFlagExtraDataCompatible;
constexpr uint64_t kBitmapEntryFlagsOffset = 12;  // byte offset of flags in a directory entry
constexpr uint8_t kBitmapTypeDirtyTracking = 1;
// Bitmap table entries (spec: "Bitmap table"): bits 9-55 the data cluster, bit 0 "all ones" when
// the offset is 0, bits 1-8 and 56-63 reserved.
constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kBitmapTableReservedMask = 0xff000000000001feull;

// The header extension (type kExtBitmaps).
struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
};

struct BitmapDirEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries of 8 bytes
  uint32_t flags = 0;
  uint8_t type = 0;
  uint8_t granularity_bits = 0;
  std::string name;
  uint64_t entry_offset = 0;  // byte offset of the entry inside the directory
};

// Decodes and checks the extension's 24 bytes against the header (cluster alignment, limits) and
// the file size (the directory lies inside the file).
Result<BitmapsExtension> decode_bitmaps_extension(std::span<const uint8_t> data, const Header& h,
                                                  uint64_t file_size);

// Decodes the nb_bitmaps entries of a directory read from the file (dir.size() is the
// extension's directory_size) and checks every field: reserved flag bits, type, granularity,
// name, no extra data, aligned bitmap table whose size matches the virtual size, and that the
// entries fill the directory exactly.
Result<std::vector<BitmapDirEntry>> decode_bitmap_directory(std::span<const uint8_t> dir,
                                                            uint32_t nb_bitmaps, const Header& h);

// The bitmaps extension of a header, if it has one (nullptr otherwise).
const HeaderExtension* find_bitmaps_extension(const Header& h);

// The directory of a valid bitmaps extension, and its bytes and the decoded extension in *raw
// and *ext when asked. Empty without the extension, on version 2, or when the autoclear bit says
// the bitmaps are stale (QEMU then ignores them too). An error when the extension or directory
// is invalid.
Task<Result<std::vector<BitmapDirEntry>>> read_bitmap_directory(File& f, const Header& h,
                                                                std::vector<uint8_t>* raw = nullptr,
                                                                BitmapsExtension* ext = nullptr);

// For a writer that does not update bitmaps: sets in_use on every bitmap of a valid directory
// (spec "Bitmap directory": in_use means the bitmap may be inconsistent; QEMU leaves this after a
// crash), one in-place write of the directory, then a flush, before any guest data changes.
// Does nothing without the extension or the autoclear bit. An error means the directory could
// not be read or is invalid; the caller must then clear the bitmaps autoclear bit instead.
Task<Status> mark_bitmaps_in_use(File& f, const Header& h);

}  // namespace img::qcow2
