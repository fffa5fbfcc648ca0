// qemu-img measure: the file size a new image needs, for a virtual size or for the data of a
// source chain, with qemu 7.2's formula (block/qcow2.c qcow2_measure, qcow2_calc_prealloc_size,
// qcow2_refcount_metadata_size; raw: the virtual size). See docs/img-inspect.md.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/block_map.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

// What qcow2_measure reads from the -o options (qemu reads nothing else from them).
struct MeasureOptions {
  std::string format = "raw";  // the output format: "raw" or "qcow2"
  uint64_t size = 0;           // the virtual size (-o size= or --size), without a source
  uint32_t cluster_size = 65536;
  int version = 3;
  uint32_t refcount_bits = 16;
  bool extended_l2 = false;
  Preallocation preallocation = Preallocation::kOff;
  bool has_backing_file = false;  // -o backing_file=: every source cluster counts as needed
};

// Checks list in qcow2_measure's order and words ("Extended L2 entries are only supported with
// cluster sizes of at least 16384 bytes", "Invalid compatibility level: 'x'", ...).
Result<MeasureOptions> to_measure_options(const std::string& format, const CreateOptionList& list);

struct MeasureResult {
  uint64_t required = 0;
  uint64_t fully_allocated = 0;
  bool has_bitmaps = false;  // shown when the source and a v3 qcow2 output both carry bitmaps
  uint64_t bitmaps = 0;
};

// The metadata plus data of a fully allocated qcow2 image of virtual_size bytes.
uint64_t qcow2_prealloc_size(uint64_t virtual_size, uint64_t cluster_size, unsigned refcount_bits,
                             bool extended_l2);

// The space qemu reserves in a new qcow2 image of cluster_size for a source's persistent
// bitmaps (qcow2-bitmap.c qcow2_get_persistent_dirty_bitmap_size): each bitmap's data as if
// every bit were set, its bitmap table, and the directory, each rounded up to clusters.
uint64_t qcow2_bitmaps_size(const std::vector<BitmapInfo>& bitmaps, uint64_t disk_size,
                            uint64_t cluster_size);

// Measures for opts.size (source == nullptr) or for the chain source reads through (opts.size is
// then ignored, as qemu ignores it). source_has_bitmap_support: the source is a qcow2 v3 image,
// whose persistent bitmaps are source_bitmaps.
Task<Result<MeasureResult>> measure(const MeasureOptions& opts, ChainMapper* source,
                                    uint64_t source_size, bool source_has_bitmap_support,
                                    const std::vector<BitmapInfo>& source_bitmaps = {});

}  // namespace img
