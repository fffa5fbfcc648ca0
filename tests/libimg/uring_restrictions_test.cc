// IoLoop's rings accept only the operations IoLoop issues (io/uring_restrictions.h): an open,
// a connect or an SQE flag is refused with -EACCES, the loop's own operations work, and every
// IoLoop on this kernel is restricted. Skipped where the kernel has no io_uring or no
// restrictions (before 5.10).
#include "io/uring_restrictions.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "img/io_loop.h"

namespace img {
namespace {

struct Ring {
  io_uring ring;
  int err = 0;
  explicit Ring(unsigned entries) { err = init_restricted_ring(entries, &ring); }
  ~Ring() {
    if (err == 0) io_uring_queue_exit(&ring);
  }
  // Submits one prepared SQE and returns its completion's result.
  template <class Prep>
  int run(Prep prep) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    prep(sqe);
    EXPECT_EQ(io_uring_submit(&ring), 1);
    io_uring_cqe* cqe = nullptr;
    EXPECT_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
    int res = cqe ? cqe->res : -9999;
    if (cqe) io_uring_cqe_seen(&ring, cqe);
    return res;
  }
};

TEST(UringRestrictions, OnlyTheLoopsOwnOperationsPass) {
  Ring r(8);
  if (r.err == -ENOSYS || r.err == -EPERM) GTEST_SKIP() << "no io_uring here: " << strerror(-r.err);
  if (r.err == -EINVAL) GTEST_SKIP() << "this kernel has no io_uring restrictions (Linux < 5.10)";
  ASSERT_EQ(r.err, 0) << strerror(-r.err);
  char path[] = "/tmp/uring_restrict_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  char buf[16] = "restricted ring";
  EXPECT_EQ(r.run([](io_uring_sqe* s) { io_uring_prep_nop(s); }), 0);
  EXPECT_EQ(r.run([&](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, 16, 0); }), 16);
  EXPECT_EQ(r.run([&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, 16, 0); }), 16);
  EXPECT_EQ(r.run([&](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); }), 0);
  // What a subverted device thread would want: refused.
  EXPECT_EQ(
      r.run([](io_uring_sqe* s) { io_uring_prep_openat(s, AT_FDCWD, "/etc/passwd", O_RDONLY, 0); }),
      -EACCES);
  EXPECT_EQ(r.run([](io_uring_sqe* s) { io_uring_prep_socket(s, AF_INET, SOCK_STREAM, 0, 0); }),
            -EACCES);
  EXPECT_EQ(r.run([&](io_uring_sqe* s) { io_uring_prep_close(s, fd); }), -EACCES);
  EXPECT_EQ(r.run([&](io_uring_sqe* s) {
    io_uring_prep_read(s, fd, buf, 16, 0);
    io_uring_sqe_set_flags(s, IOSQE_ASYNC);
  }),
            -EACCES);
  // No register calls either: a file table would let fixed-file operations name other files.
  EXPECT_LT(io_uring_register_files(&r.ring, &fd, 1), 0);
  EXPECT_EQ(fcntl(fd, F_GETFD), 0) << "the close went through";
  close(fd);
}

TEST(UringRestrictions, EveryIoLoopIsRestricted) {
  auto loop = IoLoop::create();
  ASSERT_TRUE(loop);
  if (!(*loop)->has_uring()) GTEST_SKIP() << (*loop)->uring_error();
  Ring probe(2);
  if (probe.err == -EINVAL) GTEST_SKIP() << "this kernel has no io_uring restrictions";
  EXPECT_TRUE((*loop)->uring_restricted());
}

}  // namespace
}  // namespace img
