// Checker: one pass of `check_qcow2` over an image (docs/qcow2-format.md, "Check and repair").
// check_walk.cc counts the references to every host cluster (header, L1/L2 tables, data,
// refcount structures, snapshots); check_refcount.cc compares them with the on-disk refcounts,
// checks OFLAG_COPIED and repairs; check.cc drives the passes like `qemu-img check`.
// Spec: qemu/qemu docs/interop/qcow2.rst, "Host cluster management", "Cluster mapping",
// "Snapshots".
//
// Thread-safety: one IoLoop thread; one Checker per pass.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "img/qcow2.h"
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
  // Reference counting (check_walk.cc).
  void inc(uint64_t off, uint64_t len);
  Task<Status> walk_l1(uint64_t l1_off, uint64_t l1_entries, bool active);
  Task<Status> walk_l2(uint64_t l2_off, bool active);
  Task<Status> walk_snapshots();
  Task<Status> walk_refcount_table();

  // On-disk refcounts through a one-block cache (check_refcount.cc).
  Task<Result<uint64_t>> disk_refcount(uint64_t cluster);
  Task<Status> set_disk_refcount(uint64_t cluster, uint64_t value);
  Task<Status> load_block(uint64_t block_offset);
  Task<Status> write_back_block();
  Task<Status> rebuild_refcounts();

  void error(std::string msg);  // a corruption: counted and recorded
  void note(std::string msg) { res_.messages.push_back(std::move(msg)); }

  File& f_;
  Header h_;
  uint64_t file_size_;
  uint64_t cs_;
  RepairMode mode_;
  CheckResult& res_;
  bool has_data_file_;

  // References per host cluster; sized to the file plus one cluster (QEMU tolerates metadata
  // reaching less than a cluster past the end of the file), saturating at UINT32_MAX.
  std::vector<uint32_t> refs_;
  // What the current refcount table and blocks contribute to refs_, to take out on rebuild.
  std::vector<std::pair<uint64_t, uint64_t>> refcount_structures_;
  uint64_t refblock_errors_ = 0;  // unusable refcount table entries: rebuild with kAll

  std::vector<uint64_t> rt_;  // refcount table entries
  uint64_t block_offset_ = 0;  // cached refcount block (0: none)
  std::vector<uint8_t> block_;
  bool block_dirty_ = false;
};

}  // namespace img::qcow2
