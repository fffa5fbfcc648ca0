// Checker: one pass of `check_qcow2` over an image (docs/qcow2-format.md, "Check and repair").
// check_walk.cc counts the references to every host cluster (header, L1/L2 tables, data,
// snapshots, bitmaps, refcount structures); check_snapshot.cc reads the snapshot table;
// check_refcount.cc compares the counts with the on-disk refcounts streaming over the refcount
// blocks, checks OFLAG_COPIED and repairs; check.cc drives the passes like `qemu-img check`.
// Memory and time follow the metadata: counts live in RefCounts (check_refs.h), and only the
// refcount blocks that exist and the pages that were referenced are visited, never every cluster
// of the file.
// Spec: qemu/qemu docs/interop/qcow2.rst, "Host cluster management", "Cluster mapping",
// "Snapshots", "Bitmaps".
//
// Thread-safety: one IoLoop thread; one Checker per pass.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "img/qcow2.h"
#include "qcow2/check_refs.h"
#include "qcow2/format.h"

namespace img::qcow2 {

class Checker {
 public:
  Checker(File& f, const Header& h, uint64_t file_size, RepairMode mode, CheckResult& res);

  // check_walk.cc: fills the reference counts and the fragmentation figures.
  Task<Status> count_references();
  // check_refcount.cc: compares references with refcounts; repairs per mode.
  Task<Status> compare_and_repair();
  // check_refcount.cc: OFLAG_COPIED on the active L1 and L2 entries (repaired with kAll).
  Task<Status> check_copied();

  const Header& header() const { return h_; }

 private:
  struct Snapshot {
    uint64_t l1_offset;
    uint64_t l1_size;
  };
  // A cluster whose on-disk refcount differs from the references counted (check_refcount.cc).
  struct Mismatch {
    uint64_t cluster, disk, refs;
  };

  // Reference counting (check_walk.cc).
  void inc(uint64_t off, uint64_t len);
  Task<Status> walk_l1(uint64_t l1_off, uint64_t l1_entries, bool active);
  Task<Status> walk_l2(const uint8_t* l2, bool active);
  Task<Status> walk_bitmaps();
  Task<Status> walk_refcount_table();
  // check_snapshot.cc: decodes the table entry by entry into snaps_ and snapshots_size_.
  Task<Status> read_snapshot_table();
  Task<Status> walk_snapshots();

  // On-disk refcounts (check_refcount.cc).
  Task<Status> load_block(uint64_t block_offset);
  Task<Status> write_back_block();
  Task<Status> set_disk_refcount(uint64_t cluster, uint64_t value);
  Task<Status> rebuild_refcounts();
  // The on-disk refcount after the comparison (and any repair): the counted references unless
  // the cluster is in mismatches_. False if it could not be read (an invalid refcount block).
  bool disk_refcount_after_compare(uint64_t cluster, uint64_t* value) const;
  // For the COPIED checks: as above inside the compared range, else read from the refcount
  // block (a cluster past the end of the file keeps the refcount the file says, as in QEMU).
  Task<Result<std::optional<uint64_t>>> refcount_for_copied(uint64_t cluster);
  // The refcount block of table entry bi: its offset, or 0 (none), or an error if unusable.
  Result<uint64_t> block_offset_of(uint64_t bi) const;
  void compare_one(uint64_t cluster, uint64_t disk, uint64_t* highest, bool* any);

  void error(std::string msg);  // a corruption: counted and recorded
  void note(std::string msg) { res_.messages.push_back(std::move(msg)); }

  File& f_;
  Header h_;
  uint64_t file_size_;
  const uint64_t walked_file_size_;  // the size the walk saw (a rebuild grows file_size_)
  uint64_t cs_;
  RepairMode mode_;
  CheckResult& res_;
  bool has_data_file_;
  uint64_t per_block_;  // refcount entries per refcount block

  RefCounts refs_;
  // Clusters the comparison covers: the file's clusters, or further where metadata reaches
  // (QEMU's nb_clusters, grown by references up to one cluster past the end).
  uint64_t nb_clusters_ = 0;
  // What the current refcount table and blocks contribute to refs_, to take out on rebuild.
  std::vector<std::pair<uint64_t, uint64_t>> refcount_structures_;
  uint64_t refblock_errors_ = 0;  // unusable refcount table entries: rebuild with kAll
  // The snapshot table could not be read: its clusters are unaccounted for, so nothing may be
  // repaired (freeing them would destroy the snapshots' data).
  bool snapshots_unreadable_ = false;

  std::vector<Snapshot> snaps_;
  uint64_t snapshots_size_ = 0;  // bytes of the snapshot table (QEMU's snapshots_size)

  std::vector<uint64_t> rt_;          // refcount table entries
  std::vector<Mismatch> mismatches_;  // sorted by cluster
  // Refcount table indexes whose block could not be read (no refcount known there).
  std::vector<uint64_t> unreadable_blocks_;  // sorted
  uint64_t block_offset_ = 0;                // cached refcount block (0: none)
  std::vector<uint8_t> block_;
  bool block_dirty_ = false;
};

}  // namespace img::qcow2
