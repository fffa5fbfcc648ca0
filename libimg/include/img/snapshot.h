// Internal snapshots of an open image (qcow2; spec: qemu docs/interop/qcow2.rst "Snapshots").
// Each call is a whole-image operation: REQUIRES no other request in flight on the driver
// (the tools run nothing else; a VMM pauses its devices first). Drivers without snapshots
// (raw) answer kNotSupported.
//
// Crash safety: create, apply and delete each commit with one header write; a crash before it
// leaves the old snapshot table (and image), after it the new one, and at worst leaked clusters
// (refcounts too high) and COPIED flags left clear on clusters only the active image uses (a
// needless copy-on-write, as QEMU leaves it; `img check -r all` sets them). A flag never says
// "only mine" of a cluster a snapshot shares.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

struct SnapshotInfo {
  std::string id;    // unique in the image ("1", "2", ... when libimg or QEMU assign them)
  std::string name;  // the tag; not necessarily unique
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;  // creation time, seconds and nanoseconds since the epoch
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;  // guest clock at creation
  uint64_t disk_size = 0;      // the virtual size when the snapshot was taken
  std::optional<uint64_t> icount;  // instruction count, when the entry records one
};

// The snapshots in table order.
Result<std::vector<SnapshotInfo>> list_snapshots(const BlockDriver& d);

struct SnapshotCreateOptions {
  std::string name;
  std::string id;  // empty: one more than the largest numeric id, as QEMU assigns them
  // Creation time; 0/0 means now.
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t icount = 0;  // what qemu-img records for a disk-only snapshot
};
// Records the current disk state as a new snapshot (disk only, no VM state).
Task<Result<SnapshotInfo>> create_snapshot(BlockDriver& d, const SnapshotCreateOptions& opts);

// Makes the disk what it was when the snapshot was taken, its virtual size included. The key
// is an id, or else a name (QEMU's order). The snapshot stays.
Task<Status> apply_snapshot(BlockDriver& d, const std::string& id_or_name);

// Which snapshot load_snapshot_tmp reads. With id_or_name (QEMU's bare form) the key is tried
// as an id, then as a name; otherwise every part given must match (an empty one included).
struct SnapshotSelector {
  std::optional<std::string> id, name;
  bool id_or_name = false;
};

// -l's text as qemu-img convert and qemu-nbd take it: "snapshot.id=ID", "snapshot.name=NAME"
// (comma-separated, both may be given), or a bare ID_OR_NAME (anything not starting with
// "snapshot."). An unknown key is kInvalidArgument in qemu's words ("Invalid parameter 'x'").
Result<SnapshotSelector> parse_snapshot_param(const std::string& text);

// Makes a read-only image read as the snapshot (QEMU's bdrv_snapshot_load_tmp, behind
// qemu-img convert -l and qemu-nbd -l): its L1 table stands in for the current one, at the
// image's current virtual size; nothing in the file changes. kNotFound "Can't find snapshot";
// a raw image or a writable one is refused in qemu's words.
Task<Status> load_snapshot_tmp(BlockDriver& d, const SnapshotSelector& sel);

// Deletes the snapshot with this id (and this name, when name is not empty); kNotFound if none.
Task<Status> delete_snapshot(BlockDriver& d, const std::string& id, const std::string& name = "");

}  // namespace img
