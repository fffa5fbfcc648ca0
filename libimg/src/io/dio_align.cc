// The alignment O_DIRECT needs for one file, from statx(STATX_DIOALIGN) (Linux 6.1+), in a file
// of its own because glibc 2.36's struct statx lacks the fields <linux/stat.h> has.
#include <fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io/dio_align.h"

namespace img {

DioAlign query_dio_align(int fd) {
  DioAlign a;
  struct statx stx = {};
  long r = syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx);
  if (r == 0 && (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align != 0) {
    a.mem = stx.stx_dio_mem_align < 512 ? 512 : stx.stx_dio_mem_align;
    a.offset = stx.stx_dio_offset_align;
  }
  return a;
}

}  // namespace img
