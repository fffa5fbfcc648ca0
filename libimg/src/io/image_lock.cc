// QEMU's image lock bytes; see image_lock.h and docs/img.md "Locking".
#include "io/image_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

namespace img {
namespace {

int ofd_set(int fd, int64_t byte, bool lock) {
  struct flock fl = {};
  fl.l_type = lock ? F_RDLCK : F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}

int ofd_test(int fd, int64_t byte, bool* held) {
  // qemu_lock_fd_test(fd, off, 1, true): an exclusive probe finds any other open file's lock.
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return errno;
  *held = fl.l_type != F_UNLCK;
  return 0;
}

constexpr int kPermBits = 4;  // BLK_PERM_ALL in QEMU 7.2 is 0xf

// raw_lock_error_setg_errno: a lock someone else holds is named without an errno; any other
// failure (no lock support on the file system: ENOLCK, ENOTSUP) says what the OS said. QEMU
// 7.2 fails the open in both cases (it goes on without locks only where the OFD calls do not
// exist at all, qemu_has_ofd_lock, which every Linux since 3.15 has).
Unexpected lock_error(int err, std::string msg) {
  if (err != EAGAIN && err != EACCES) msg += std::string(": ") + std::strerror(err);
  return make_error(err == EAGAIN || err == EACCES ? ErrorCode::kLocked : ErrorCode::kIo,
                    std::move(msg));
}

}  // namespace

const LockSyscalls& ofd_lock_syscalls() {
  static const LockSyscalls sys{ofd_set, ofd_test};
  return sys;
}

const char* perm_name(uint64_t bit) {
  // bdrv_perm_names (block.c, 7.2).
  switch (bit) {
    case kPermConsistentRead:
      return "consistent read";
    case kPermWrite:
      return "write";
    case kPermWriteUnchanged:
      return "write unchanged";
    case kPermResize:
      return "resize";
  }
  return "unknown";
}

Status ImageLock::apply(int fd, uint64_t perm, uint64_t unshared) {
  for (int pass = 0; pass < 2; ++pass) {
    int64_t base = pass == 0 ? kLockPermBase : kLockSharedBase;
    uint64_t want = pass == 0 ? perm : unshared;
    uint64_t& held = pass == 0 ? perm_ : unshared_;
    for (int i = 0; i < kPermBits; ++i) {
      uint64_t bit = uint64_t{1} << i;
      if (!(want & bit) || (held & bit)) continue;
      if (int err = sys_->set(fd, base + i, true); err != 0) {
        return lock_error(err, strfmt("Failed to lock byte %d", int(base + i)));
      }
      held |= bit;
    }
  }
  return {};
}

void ImageLock::restore(int fd, uint64_t perm, uint64_t unshared) {
  // Only unlocks, which cannot conflict; QEMU ignores (warns about) a failure here too.
  for (int i = 0; i < kPermBits; ++i) {
    uint64_t bit = uint64_t{1} << i;
    if ((perm_ & bit) && !(perm & bit) && sys_->set(fd, kLockPermBase + i, false) == 0) {
      perm_ &= ~bit;
    }
    if ((unshared_ & bit) && !(unshared & bit) && sys_->set(fd, kLockSharedBase + i, false) == 0) {
      unshared_ &= ~bit;
    }
  }
}

Status ImageLock::check(int fd, uint64_t perm, uint64_t shared) const {
  // raw_check_lock_bytes: first the permissions wanted, then those not shared.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < kPermBits; ++i) {
      uint64_t bit = uint64_t{1} << i;
      bool relevant = pass == 0 ? (perm & bit) != 0 : (shared & bit) == 0;
      if (!relevant) continue;
      int64_t byte = (pass == 0 ? kLockSharedBase : kLockPermBase) + i;
      bool held = false;
      int err = sys_->test(fd, byte, &held);
      if (err == 0 && !held) continue;
      std::string what =
          strfmt(pass == 0 ? "Failed to get \"%s\" lock" : "Failed to get shared \"%s\" lock",
                 perm_name(bit));
      return lock_error(err == 0 ? EAGAIN : err, std::move(what));
    }
  }
  return {};
}

Status ImageLock::acquire(int fd, const std::string& name, uint64_t perm, uint64_t shared) {
  perm &= kPermAll;
  shared &= kPermAll;
  uint64_t old_perm = perm_, old_unshared = unshared_;
  Status s = apply(fd, perm_ | perm, unshared_ | (kPermAll & ~shared));
  if (s) {
    s = check(fd, perm, shared);
    if (!s) {
      // error_append_hint in raw_handle_perm_lock: qemu-img prints it on the next line.
      Error e = std::move(s).error();
      s = Unexpected(
          Error(e.code(), e.message() + "\nIs another process using the image [" + name + "]?"));
    }
  }
  if (!s) restore(fd, old_perm, old_unshared);
  return s;
}

}  // namespace img
