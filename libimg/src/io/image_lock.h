// ImageLock: QEMU's image locking (block/file-posix.c raw_apply_lock_bytes,
// raw_check_lock_bytes, raw_handle_perm_lock), so that img, vmm, qemu-img and QEMU keep each
// other off an image the same way.
//
// Each user of an image file holds one-byte read locks on it, through F_OFD_SETLK so that they
// belong to the open file description (two opens in one process conflict, as two processes do;
// closing the file drops them):
//   byte 100 + i  (RAW_LOCK_PERM_BASE):   "I hold permission i"
//   byte 200 + i  (RAW_LOCK_SHARED_BASE): "I do not let others take permission i"
// with i the bit index of QEMU's BLK_PERM_* (kPermConsistentRead = 0, kPermWrite = 1,
// kPermWriteUnchanged = 2, kPermResize = 3; QEMU 7.2 has no others). A new user first takes its own
// bytes, then tests (F_OFD_GETLK, F_WRLCK) that no other holds the "not shared" byte of a
// permission it wants, nor the permission byte of one it does not share; on a conflict it gives
// its new bytes back. Taking before testing means two users that race both see each other, so at
// worst both fail, never both succeed.
//
// Thread-safety: an ImageLock belongs to the owner of its descriptor (a HostFile).
#pragma once

#include <cstdint>
#include <string>

#include "img/file.h"
#include "img/status.h"

namespace img {

// The two fcntl calls, swappable so tests can play a file system without lock support.
struct LockSyscalls {
  // F_OFD_SETLK of byte `byte`: a read lock (lock) or an unlock. Returns 0 or an errno.
  int (*set)(int fd, int64_t byte, bool lock);
  // F_OFD_GETLK (F_WRLCK) of byte `byte`: *held says whether another open file holds a lock
  // there. Returns 0 or an errno.
  int (*test)(int fd, int64_t byte, bool* held);
};
const LockSyscalls& ofd_lock_syscalls();

constexpr int64_t kLockPermBase = 100;    // RAW_LOCK_PERM_BASE
constexpr int64_t kLockSharedBase = 200;  // RAW_LOCK_SHARED_BASE

// QEMU's name of one permission bit (bdrv_perm_names): "write", "consistent read", ...
const char* perm_name(uint64_t bit);

class ImageLock {
 public:
  explicit ImageLock(const LockSyscalls& sys = ofd_lock_syscalls()) : sys_(&sys) {}

  // Adds perm to the permissions held on fd and forbids others what shared leaves out, after
  // checking that no other user's locks conflict. On failure the bytes held before stay held
  // and no others: a conflict reads, in qemu's words,
  //   Failed to get "write" lock
  //   Is another process using the image [NAME]?
  // REQUIRES: fd is the same open file on every call.
  Status acquire(int fd, const std::string& name, uint64_t perm, uint64_t shared);

  uint64_t perm() const { return perm_; }
  uint64_t unshared() const { return unshared_; }

 private:
  // Locks the bytes of perm and unshared that are not held yet.
  Status apply(int fd, uint64_t perm, uint64_t unshared);
  // Unlocks the bytes held beyond perm and unshared.
  void restore(int fd, uint64_t perm, uint64_t unshared);
  Status check(int fd, uint64_t perm, uint64_t shared) const;

  const LockSyscalls* sys_;
  uint64_t perm_ = 0;      // bytes held at kLockPermBase + i
  uint64_t unshared_ = 0;  // bytes held at kLockSharedBase + i
};

}  // namespace img
