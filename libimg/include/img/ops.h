// ops: whole-image operations shared by the img tool and the VMM, on top of BlockDriver.
//
//   convert        copies images (one, or several concatenated) into another, walking the
//                  sources' runs (block_status) with many chunk coroutines in flight on one
//                  loop, skipping what reads as zeros (qemu-img convert's behaviour, -S 4k by
//                  default), optionally compressing every data cluster (-c) on a thread pool.
//   create_image   makes a new raw or qcow2 file.
//   resize_image   qemu-img resize's checks, then BlockDriver::resize.
//   commit         qemu-img commit's copy of an overlay's data into an image below it.
//   rebase_copy    qemu-img rebase's safe mode: what a new backing file would change, copied up.
//   amend_image    qemu-img amend: compat, lazy_refcounts, refcount_bits, size of a qcow2 image.
//   parse_size, parse_create_options
//                  qemu-img's size strings ("1.5G") and -o key=value,... create options.
//
// Thread-safety: everything runs on the calling thread's IoLoop.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "img/qcow2.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

// ---- convert -------------------------------------------------------------------------------

struct ConvertOptions {
  // Called on the loop thread after each chunk completes (bytes done, bytes total).
  std::function<void(uint64_t done, uint64_t total)> progress;
  // Chunks processed at once (qemu-img convert -m: 1..16, default 8).
  unsigned in_flight = 8;
  // Most bytes of data one chunk reads and writes; a multiple of 4096. Runs that need no data
  // moved (zeros on a destination that reads as zeros) are one chunk whatever their length.
  uint64_t chunk_size = 2 << 20;
  // Sparse detection (qemu-img convert -S, default 4 KiB; a multiple of 512): data read from the
  // source is scanned, and runs of zeros at least this long are not written as data; 0 writes
  // everything as data, zero ranges of the source included (a fully allocated destination).
  uint64_t min_sparse = 4096;
  // The destination reads as zeros already (a fresh image, or --target-is-zero), so zero ranges
  // need no write at all; otherwise they are written with write_zeroes.
  bool target_is_zero = true;
  // Write every data cluster compressed (qemu-img convert -c): the destination must support
  // write_compressed; clusters that read as zeros are left unwritten like any zero range, and
  // chunks are rounded up to whole destination clusters.
  bool compress = false;
  // Writes reach the destination in the order of their offsets (qemu-img convert's default;
  // -W clears it): a qcow2 destination then lays its clusters out in guest order. Reads still
  // run in parallel.
  bool in_order = true;
  // Copy data ranges with BlockDriver::copy_range_to where the two sides allow it (qemu-img
  // convert -C); where they do not, the convert falls back to reading and writing for good.
  // Data ranges are copied whole, without sparse detection (qemu-img refuses -C with -S).
  bool copy_range = false;
  // The destination has a backing file (qemu-img convert -B): ranges that the source's top
  // image does not hold (kBacking) are left unwritten so that the backing file shows through,
  // and zero ranges are written as zeros below target_backing_size (past it they read as zeros
  // already). target_is_zero must then be false.
  bool target_has_backing = false;
  uint64_t target_backing_size = 0;
};

struct ConvertStats {
  uint64_t bytes_read = 0;          // data read from the sources
  uint64_t bytes_written = 0;       // data written to the destination
  uint64_t bytes_zero = 0;          // bytes skipped or written as zeros
  uint64_t bytes_offloaded = 0;     // data copied by copy_range_to
  uint64_t bytes_backing = 0;       // bytes left to the destination's backing file
  uint64_t block_status_calls = 0;  // what the walk cost: one call per run of the sources
};

// Copies the concatenation of sources (each one's [0, size()), in order) into dst, which must be
// at least as large as their total, and flushes dst. The first error stops the copy; chunks
// already in flight finish first. Errors say where: "error while reading at byte N: ...".
Task<Result<ConvertStats>> convert(IoLoop& loop, std::span<BlockDriver* const> sources,
                                   BlockDriver& dst, const ConvertOptions& opts);
// One source.
Task<Result<ConvertStats>> convert(IoLoop& loop, BlockDriver& src, BlockDriver& dst,
                                   const ConvertOptions& opts);

// True if all len bytes at p are zero.
bool is_zero(const void* p, size_t len);

// ---- commit and rebase ---------------------------------------------------------------------

// qemu-img commit's copy: writes what the images above base hold (top, then each backing image
// down to, not including, top's base_depth-th one) into base, through convert's run walk, so
// the cost follows their data: their data ranges are read through top and written as data,
// their zero clusters become zeros in base, and what none of them holds is not touched. base
// is that chain layer opened read-write on its own (the chain's copy of it is read-only and is
// never read); it grows to top's size first if it is smaller, as QEMU's commit job grows it.
// base is flushed; top and the images above base are not changed (the caller empties top with
// BlockDriver::make_empty unless told not to).
// REQUIRES: 1 <= base_depth <= the number of backing images below top.
Task<Result<ConvertStats>> commit(IoLoop& loop, BlockDriver& top, unsigned base_depth,
                                  BlockDriver& base, const ConvertOptions& opts);

struct RebaseStats {
  uint64_t bytes_compared = 0;  // bytes read from both chains and compared
  uint64_t bytes_written = 0;   // bytes copied into the overlay
};
// qemu-img rebase's safe mode, before the header changes: top's guest-visible content stays what
// it is with new_backing (nullptr: none, which flattens) behind it instead of its present chain.
// Every range that top does not hold itself is read from both chains (zeros past either one's
// end) and where they differ, 512-byte sector by sector as qemu-img compares them, the old
// content is written into top. Ranges that read as zeros through both chains are skipped
// without reading. progress(done, total) is called as the walk advances.
Task<Result<RebaseStats>> rebase_copy(IoLoop& loop, BlockDriver& top, BlockDriver* new_backing,
                                      const std::function<void(uint64_t, uint64_t)>& progress);

// ---- create --------------------------------------------------------------------------------

// Makes path a new image of size bytes (replacing an existing file). format "raw" honours
// opts.preallocation off/falloc/full; "qcow2" passes opts (with size) to create_qcow2.
Task<Status> create_image(IoLoop& loop, const std::string& path, const std::string& format,
                          uint64_t size, const Qcow2CreateOptions& opts);

// ---- resize --------------------------------------------------------------------------------

// qemu-img resize's SIZE argument: absolute ("10G") or relative ("+1G", "-512M").
struct SizeChange {
  int sign = 0;  // 0: the new size is amount; +1 / -1: the current size plus / minus amount
  uint64_t amount = 0;
};
// Errors in qemu-img 7.2's words ("Parameter 'size' expects a non-negative number below 2^64"
// and its suffix hint).
Result<SizeChange> parse_size_change(std::string_view s);
// The new size for an image of current bytes; qemu-img computes it in int64_t, and a result
// that is not positive is refused: "New image size must be positive".
Result<uint64_t> resolve_size_change(uint64_t current, SizeChange change);

// qemu-img resize on an open image: refuses what qemu-img 7.2 refuses, in its order and words
// ("Preallocation can only be used for growing images", then, without opts.allow_shrink, any
// shrink: "Use the --shrink option to perform a shrink operation."), then resizes and flushes.
Task<Status> resize_image(BlockDriver& drv, uint64_t new_size, const ResizeOptions& opts);

// ---- amend ---------------------------------------------------------------------------------

// qemu-img amend -o ...: the options checked as qemu-img 7.2 checks them ("Invalid parameter
// 'cluster_size'" + "This option is only supported for image creation", "Unknown compatibility
// level 2.0", "Refcount width must be a power of two and may not exceed 64 bits", ...).
struct AmendOptionList {
  Qcow2AmendOptions options;
  bool help = false;  // "-o help"
};
Result<AmendOptionList> parse_amend_options(const std::string& format,
                                            const std::vector<std::string>& option_strings);
// The "-o help" text: "Amend options for 'qcow2':" and the keys.
std::string amend_options_help(const std::string& format);
// Changes an open image's options in place (qemu's qcow2_amend_options): compat 0.10 <-> 1.1,
// lazy_refcounts, refcount_bits (the refcount structure rewritten), size. A downgrade expands
// zero clusters and is refused while a version-3-only feature is in use; backing file changes
// are refused as in qemu-img 7.2 (rebase does them). Each step commits with a header write, so
// a failure leaves a valid image. Formats other than qcow2: "Format driver 'raw' does not
// support option amendment". REQUIRES: no other request in flight on drv.
Task<Status> amend_image(BlockDriver& drv, const Qcow2AmendOptions& opts,
                         const AmendProgress& progress);

// ---- option parsing ------------------------------------------------------------------------

// qemu's size syntax (qemu_strtosz): an integer (decimal or 0x hex) or a decimal fraction with
// an optional suffix b/B (bytes) k K M G T P E (binary multiples), case-insensitive; "1.5G".
// Fractions need a suffix other than b. Rejects negatives, garbage and values above max
// (INT64_MAX by default; qemu-img resize takes anything below 2^64).
Result<uint64_t> parse_size(std::string_view s, uint64_t max = INT64_MAX);

// -o key=value,... as qemu-img create understands it, kept as written (so the "Formatting ..."
// line can echo it) until to_qcow2_options() checks the values.
struct CreateOptionList {
  // Keys in the order given; a later value for the same key replaces the earlier one.
  std::vector<std::pair<std::string, std::string>> items;
  const std::string* find(std::string_view key) const;
  bool help = false;  // "-o help" or "-o ?"
};

// Splits "a=b,c=d" (",," escapes a comma in a value) and checks that each key is one the
// format knows; raw knows size and preallocation. Unknown keys: "Invalid parameter 'x'".
Result<CreateOptionList> parse_create_options(const std::string& format,
                                              const std::vector<std::string>& option_strings);

// Converts checked option values into Qcow2CreateOptions (also used for raw: size and
// preallocation). Errors use qemu-img's words: "Parameter 'preallocation' does not accept value
// 'xx'", "Lazy refcounts only supported with compatibility level 1.1 and above ...".
Result<Qcow2CreateOptions> to_create_options(const std::string& format,
                                             const CreateOptionList& list);

// The "-o help" text for a format, as qemu-img prints it.
std::string create_options_help(const std::string& format);

// The options part of qemu-img create's "Formatting 'f', fmt=qcow2 cluster_size=65536 ..." line,
// in qemu-img 7.2's order: "cluster_size=65536 extended_l2=off compression_type=zlib size=..".
std::string describe_create_options(const std::string& format, const CreateOptionList& list,
                                    uint64_t size);

}  // namespace img
