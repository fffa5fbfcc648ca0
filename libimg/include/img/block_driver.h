// BlockDriver: a disk image as the guest sees it (a flat range of bytes of size()), whatever the
// format underneath. raw and qcow2 implement it; the VMM's virtio-blk, the img tool and the ops
// layer use only this.
//
// All I/O is coroutines on the IoLoop the driver was opened on; many requests may be in flight
// at once, and the driver orders what must be ordered (two writes to one qcow2 cluster, metadata
// updates). Requests must lie inside [0, size()): the driver refuses others with kInvalidArgument.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "img/status.h"
#include "img/task.h"

namespace img {

// What a range of the image holds (block_status).
struct BlockStatus {
  enum class Kind {
    kData,         // allocated in this image's file
    kZero,         // allocated as zeros here (zero cluster, or a hole in a raw file)
    kUnallocated,  // not allocated here and nothing behind it: reads as zeros
    kBacking,      // not allocated here: reads from the backing image
  };
  Kind kind = Kind::kUnallocated;
  uint64_t length = 0;                  // bytes from the queried offset with this status
  // Where the range lies in the image's file: kData, and (qcow2) zeros or unallocated
  // subclusters that keep a host cluster (QEMU's OFFSET_VALID for ZERO_ALLOC and
  // UNALLOCATED_ALLOC). A run with one is contiguous in the file.
  std::optional<uint64_t> host_offset;
  bool compressed = false;              // kData held compressed: no host offset
  bool known_zero = false;  // kData known to read as zeros (an allocated NBD extent with ZERO)

  // The range reads as zeros without reading it.
  bool reads_as_zero() const {
    return kind == Kind::kZero || kind == Kind::kUnallocated || known_zero;
  }
};

struct WriteZeroesFlags {
  bool may_unmap = false;  // the range may be deallocated (virtio-blk's UNMAP flag)
};

// How new space is made ready: qemu's preallocation modes (create -o preallocation=, resize
// --preallocation=). off: nothing; metadata: qcow2 tables map every cluster (raw refuses it);
// falloc: plus the host file's blocks reserved (fallocate); full: plus zeros written.
enum class Preallocation { kOff, kMetadata, kFalloc, kFull };

struct ResizeOptions {
  // For the space a grow adds; a shrink refuses anything but kOff.
  Preallocation preallocation = Preallocation::kOff;
  // A shrink may drop data past the new end. Without it, a shrink whose cut-off part holds data
  // is refused (qemu-img resize refuses every shrink without --shrink: ops' resize_image).
  bool allow_shrink = false;
};

class BlockDriver {
 public:
  virtual ~BlockDriver() = default;

  // Guest-visible size in bytes.
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // "raw", "qcow2".
  virtual const char* format_name() const = 0;
  // The image this one's unallocated ranges read from, when its chain was opened; else nullptr.
  virtual BlockDriver* backing() const { return nullptr; }

  virtual Task<Status> readv(uint64_t off, std::span<const iovec> iov) = 0;
  virtual Task<Status> writev(uint64_t off, std::span<const iovec> iov) = 0;
  // Every write completed before flush was called is durable when it completes.
  virtual Task<Status> flush() = 0;
  // The range need no longer hold its data; reads may return old data or zeros (qcow2 frees
  // whole clusters and they then read as zeros or from the backing file).
  virtual Task<Status> discard(uint64_t off, uint64_t len) = 0;
  // The range reads as zeros afterwards.
  virtual Task<Status> write_zeroes(uint64_t off, uint64_t len, WriteZeroesFlags flags) = 0;
  // Whether write_zeroes of [off, off+len) changes metadata only, writing no zero bytes (NBD's
  // FAST_ZERO, qemu's BDRV_REQ_NO_FALLBACK). False where that cannot be promised.
  virtual bool zeroes_without_writing(uint64_t /*off*/, uint64_t /*len*/) const { return false; }
  // The status of [off, off+len) from off on: one run of one kind, 0 < length <= len (never
  // more than asked, so a caller may ask for the rest of the image). Drivers answer with runs as
  // long as they can see cheaply: qcow2 merges entries of one kind across L2 tables and answers
  // for a whole missing L2 table at once, raw asks the host file system for its holes. A run may
  // still be shorter than the true one (qcow2 reads at most a few L2 tables a call); ask again
  // from its end. A caller never needs to look inside a format: kUnallocated and kZero read as
  // zeros, kBacking does not.
  virtual Task<Result<BlockStatus>> block_status(uint64_t off, uint64_t len) = 0;
  // Copies [off, off+len) of this image into dst at dst_off without the data passing through
  // the caller (qemu-img convert -C): raw onto raw host files, by copy_file_range. kNotSupported
  // elsewhere (the default); the caller then reads and writes the data itself.
  virtual Task<Status> copy_range_to(uint64_t off, BlockDriver& dst, uint64_t dst_off,
                                     uint64_t len);
  // Changes size() to new_size; new space reads as zeros. REQUIRES: no other request in flight
  // (QEMU drains the device around a truncate too). A format that cannot resize returns
  // kNotSupported (the default, so a driver without resize still builds).
  virtual Task<Status> resize(uint64_t new_size, const ResizeOptions& opts);
  // Writes back cached metadata, flushes, and marks the image clean. The driver must not be
  // used afterwards; destroying an open driver without close() loses only unflushed writes.
  virtual Task<Status> close() = 0;

  // Makes every cluster unallocated, so that the whole image reads from its backing image again
  // (or as zeros without one), and gives the space back: qemu's bdrv_make_empty, what qemu-img
  // commit does to the top image. REQUIRES: no other request in flight. kNotSupported where the
  // format has no notion of allocation (raw; the default).
  virtual Task<Status> make_empty();
  // Records name (and format, "" for none) as the image's backing file in its header, or no
  // backing file when name is empty: qemu's bdrv_change_backing_file (qemu-img rebase, and commit
  // -b's chain update). The backing image this driver has open, if any, stays what it reads from
  // until the image is opened again. kNotSupported where the format has no backing file (raw;
  // the default).
  virtual Task<Status> set_backing_file(const std::string& name, const std::string& format);

  // Stores [off, off+len) compressed, one cluster at a time (qemu-img convert -c). REQUIRES: off
  // is a multiple of compressed_cluster_size(), and len is too or the range ends in the image's
  // last 512-byte sector (the last, partial cluster: what follows the range reads as zeros). A
  // cluster that does not compress is stored as it is. Formats without compressed clusters
  // return kNotSupported.
  virtual Task<Status> write_compressed(uint64_t off, const void* buf, uint64_t len);
  // The unit of write_compressed (the qcow2 cluster size), or 0 if the format cannot compress.
  virtual uint64_t compressed_cluster_size() const { return 0; }

  // Convenience forms over one buffer.
  Task<Status> read(uint64_t off, void* buf, uint64_t len);
  Task<Status> write(uint64_t off, const void* buf, uint64_t len);

 protected:
  // Checks [off, off+len) against size(); names the operation in the error.
  Status check_range(const char* op, uint64_t off, uint64_t len) const;
};

// Total byte length of an iovec array.
uint64_t iov_length(std::span<const iovec> iov);

}  // namespace img
