// qcow2-specific entry points: create, check/repair, and header facts for `img info`.
// Reading and writing go through BlockDriver (img/image.h).
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/file.h"
#include "img/snapshot.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

struct Qcow2CreateOptions {
  uint64_t size = 0;              // virtual size in bytes
  int version = 3;                // 2 = compat "0.10", 3 = compat "1.1"
  uint32_t cluster_size = 65536;  // 512 B .. 2 MiB, a power of two
  uint32_t refcount_bits = 16;    // 1, 2, 4, 8, 16, 32, 64 (version 3 only if not 16)
  bool lazy_refcounts = false;    // version 3 only
  Preallocation preallocation = Preallocation::kOff;
  std::string compression_type = "zlib";  // "zlib" or "zstd" (version 3 only)
  bool extended_l2 = false;       // 128-bit L2 entries, 32 subclusters (v3, clusters >= 16 KiB)
  std::string backing_file;       // recorded in the header
  std::string backing_format;
  // An external data file: the name recorded in the header (relative names are relative to the
  // image's folder, as backing files). create_image makes the file; create_qcow2 only records it.
  std::string data_file;
  bool data_file_raw = false;  // the data file stays a valid raw image of the disk
};

// Writes a new, empty qcow2 image into f (which should be empty; it is truncated).
Task<Status> create_qcow2(File& f, const Qcow2CreateOptions& opts);

enum class RepairMode { kNone, kLeaks, kAll };

// What `qemu-img check` reports, with the same meaning.
struct CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t check_errors = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;  // guest clusters
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  // One line per finding, in qemu-img's words: "ERROR cluster 5 refcount=1 reference=2",
  // "Leaked cluster 7 refcount=1 reference=0", "ERROR OFLAG_COPIED L2 cluster: ...".
  std::vector<std::string> messages;
};

// Checks the image's metadata in f (refcounts against references, table offsets, flags) and,
// with a repair mode, fixes what it can (leaks: refcounts too high; all: rebuilds refcounts and
// corrects COPIED flags). Used by `img check` and to rebuild refcounts of a dirty image.
Task<Result<CheckResult>> check_qcow2(File& f, RepairMode mode);

// Records name (and format; "" for none) as the backing file in the qcow2 header in f, or no
// backing file when name is empty, without opening the image's driver or its chain: what
// qemu-img rebase -u changes (the chain may be missing). The first cluster is rewritten, the
// extensions libimg does not interpret kept as they were. Use BlockDriver::set_backing_file on
// an open image instead.
Task<Status> write_qcow2_backing_file(File& f, const std::string& name, const std::string& format);

// What `qemu-img amend -o ...` asks of a qcow2 image: each field set is a change requested (a
// value equal to the present one changes nothing). ops.h's parse_amend_options fills it.
struct Qcow2AmendOptions {
  std::optional<int> version;             // compat: 2 ("0.10") or 3 ("1.1")
  std::optional<bool> lazy_refcounts;
  std::optional<uint32_t> refcount_bits;  // 1, 2, 4, ..., 64
  std::optional<std::string> backing_file;
  std::optional<std::string> backing_format;
  std::optional<std::string> data_file;
  std::optional<bool> data_file_raw;  // only off may be asked of an image (as qemu)
  std::optional<uint64_t> size;  // 0 changes nothing, as in qemu
};
// Progress of an amend, (done, total) of its current pass.
using AmendProgress = std::function<void(uint64_t done, uint64_t total)>;

// A persistent dirty bitmap as qemu-img info lists it.
struct BitmapInfo {
  std::string name;
  uint64_t granularity = 0;  // bytes per bit
  bool in_use = false;       // may be inconsistent (its writer did not close it)
  bool auto_ = false;        // QEMU enables it (tracks writes) when it opens the image
};

// One of qemu-img bitmap's operations on a persistent dirty bitmap of a qcow2 image.
struct BitmapEdit {
  enum class Op { kAdd, kRemove, kClear, kEnable, kDisable };
  Op op = Op::kAdd;
  uint64_t granularity = 0;  // kAdd: bytes per bit; 0: QEMU's default (the cluster size, >= 4 KiB)
  bool disabled = false;     // kAdd: made disabled (not auto), as --add --disable
};
// Applies edit to bitmap `name` of the open image d and commits it (the new directory written
// to free space, then the header): --add makes an empty bitmap, --remove deletes one and frees
// its clusters, --clear empties one, --enable / --disable set its auto flag. Errors in QEMU
// 7.2's words ("Bitmap already exists: b0", "Dirty bitmap 'b0' not found", "Bitmap 'b0' is
// inconsistent and cannot be used", ...). REQUIRES: no other request in flight on d.
Task<Status> edit_bitmap(BlockDriver& d, const std::string& name, const BitmapEdit& edit);

// Header facts for `img info`.
struct Qcow2Info {
  int version = 3;
  uint32_t cluster_size = 0;
  uint32_t refcount_bits = 0;
  uint64_t virtual_size = 0;
  bool lazy_refcounts = false;
  bool corrupt = false;
  bool dirty = false;
  bool extended_l2 = false;
  std::string compression_type;  // "zlib" or "zstd"
  std::string backing_file;
  std::string backing_format;
  std::string data_file;  // the external data file's name as recorded; "" for none
  bool data_file_raw = false;
  uint32_t nb_snapshots = 0;
  std::vector<SnapshotInfo> snapshots;  // the snapshot table, in order
  std::vector<BitmapInfo> bitmaps;      // the bitmap directory, in order (none when stale)
};
Task<Result<Qcow2Info>> read_qcow2_info(File& f);

}  // namespace img
