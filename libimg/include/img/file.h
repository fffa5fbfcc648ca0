// File: the byte store under an image format (a host file, a buffer in memory, or a fault-injecting
// wrapper for crash tests). All operations are coroutines on one IoLoop.
//
// Thread-safety: a File belongs to the thread of its IoLoop.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "img/io_loop.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

// QEMU's block permissions (include/block/block-common.h BLK_PERM_*), which File::lock takes and
// shares: the bit index is what the image lock bytes count from (see docs/img.md, "Locking").
// QEMU 7.2 has these four (7.1 dropped BLK_PERM_GRAPH_MOD, bit 4, so no one locks 104 or 204).
constexpr uint64_t kPermConsistentRead = 1 << 0;
constexpr uint64_t kPermWrite = 1 << 1;
constexpr uint64_t kPermWriteUnchanged = 1 << 2;
constexpr uint64_t kPermResize = 1 << 3;
constexpr uint64_t kPermAll = (1 << 4) - 1;

class File {
 public:
  virtual ~File() = default;

  // Reads iov's total length at off. Bytes past the end of the file read as zeros; the result is
  // the number of bytes that came from the file (callers that need them all check it).
  virtual Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) = 0;
  // Writes all of iov at off, growing the file if needed.
  virtual Task<Status> writev(uint64_t off, std::span<const iovec> iov) = 0;
  // Makes every completed write durable.
  virtual Task<Status> flush() = 0;
  // Deallocates [off, off+len) (hole punch); the range reads as zeros, the size is unchanged.
  virtual Task<Status> discard(uint64_t off, uint64_t len) = 0;
  // The range need no longer hold its data, and may read as its old data or as zeros afterwards:
  // a hint (NBD_CMD_TRIM, a guest's discard on a raw disk). Files that can do no better than
  // discard (host files, where it punches a hole) do that.
  virtual Task<Status> trim(uint64_t off, uint64_t len) { co_return co_await discard(off, len); }
  // Makes [off, off+len) read as zeros, growing the file if needed; may deallocate.
  virtual Task<Status> write_zeroes(uint64_t off, uint64_t len) = 0;
  // Reserves space for [off, off+len) (fallocate), growing the file if needed.
  virtual Task<Status> allocate(uint64_t off, uint64_t len) = 0;
  virtual Task<Status> truncate(uint64_t size) = 0;
  virtual Result<uint64_t> size() = 0;
  // Bytes the file really occupies on its host (st_blocks * 512 for a host file).
  virtual Result<uint64_t> allocated_size() { return size(); }
  virtual bool read_only() const = 0;
  // For messages: the path, or a description.
  virtual const std::string& name() const = 0;

  // Whether [off, off+len) starts with data or with a hole, and for how many bytes (at most len):
  // SEEK_DATA / SEEK_HOLE on a host file. A hole reads as zeros. A file that cannot tell reports
  // data (the default), which is always correct, only slower to copy.
  struct Extent {
    bool data = true;
    uint64_t length = 0;
    bool zero = false;  // data that is known to read as zeros (NBD: allocated, NBD_STATE_ZERO)
  };
  virtual Result<Extent> extent_at(uint64_t /*off*/, uint64_t len) { return Extent{true, len}; }
  // The same, for files that must ask over the network (an NBD export's BLOCK_STATUS): callers
  // on the loop use this one. The default answers from extent_at.
  virtual Task<Result<Extent>> extent(uint64_t off, uint64_t len) { co_return extent_at(off, len); }
  // Copies [off, off+len) of this file to dst at dst_off inside the kernel (copy_file_range),
  // without the data passing through the caller. kNotSupported where either file cannot (then the
  // caller reads and writes the data itself, as qemu-img convert -C falls back).
  virtual Task<Status> copy_range(uint64_t off, File& dst, uint64_t dst_off, uint64_t len);
  // The host file descriptor behind this file, or -1 (for copy_range).
  virtual int host_fd() const { return -1; }
  // Takes QEMU's image lock on the file (byte locks on the open file, as block/file-posix.c
  // does): adds the kPerm* bits of perm to those this open file holds and forbids other users
  // the bits that shared leaves out, or fails with ErrorCode::kLocked (in qemu's words) when
  // another open file's locks conflict. The locks go with the file. Files with no host file
  // under them (memory, NBD) take none, as QEMU's NBD client takes none.
  virtual Status lock(uint64_t /*perm*/, uint64_t /*shared*/) { return {}; }

  // Convenience forms over a single buffer.
  Task<Result<uint64_t>> read(uint64_t off, void* buf, uint64_t len);
  Task<Status> write(uint64_t off, const void* buf, uint64_t len);
  // Reads exactly len bytes; a short read is a corruption error naming what was being read.
  Task<Status> read_exact(uint64_t off, void* buf, uint64_t len, const char* what);
};

struct FileOpenOptions {
  bool read_only = false;
  bool create = false;    // O_CREAT
  bool truncate = false;  // O_TRUNC
  bool direct = false;    // O_DIRECT (callers must then align buffers to 4096)
};

// A host file; I/O goes through loop's io_uring.
Result<std::unique_ptr<File>> open_host_file(IoLoop& loop, const std::string& path,
                                             FileOpenOptions opts);

// A host file, or an NBD export when path is an NBD URI (nbd://HOST[:PORT]/EXPORT,
// nbd+unix:///EXPORT?socket=PATH, or qemu's legacy nbd:unix:PATH[:exportname=NAME] and
// nbd:HOST:PORT[:exportname=NAME]), as qemu takes either wherever a file name goes.
Result<std::unique_ptr<File>> open_file(IoLoop& loop, const std::string& path,
                                        FileOpenOptions opts);
// Whether path names an NBD export rather than a host file.
bool is_nbd_name(const std::string& path);
// The name qemu prints for a file: an NBD export's canonical URI (nbd+unix://?socket=PATH for
// the default export, an IPv6 host without brackets, the legacy forms as URIs), else path.
std::string shown_file_name(const std::string& path);

// A file held in memory. If loop is given, every operation first yields to the loop once, so
// concurrent requests interleave as they would on a real device.
class MemFile;
std::unique_ptr<MemFile> make_mem_file(IoLoop* loop = nullptr, std::string name = "<memory>");

}  // namespace img
