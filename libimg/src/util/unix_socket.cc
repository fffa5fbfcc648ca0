#include "img/unix_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace img {
namespace {

// Fills `a` with `path` if it fits; false (errno ENAMETOOLONG or EINVAL) if it does not.
bool fill(sockaddr_un& a, const std::string& path) {
  a = {};
  a.sun_family = AF_UNIX;
  if (path.empty()) {
    errno = EINVAL;
    return false;
  }
  if (path.size() >= sizeof a.sun_path) {
    errno = ENAMETOOLONG;
    return false;
  }
  std::memcpy(a.sun_path, path.data(), path.size());
  return true;
}

// The kernel compares the whole sockaddr_un length it is given; pass exactly the used part.
socklen_t length(const sockaddr_un& a) {
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + std::strlen(a.sun_path) + 1);
}

// Runs op(fd, addr) on the /proc/self/fd name of `target` opened with `oflags`, plus `rest`.
template <typename Op>
int via_proc(const std::string& target, int oflags, const std::string& rest, Op op, int fd) {
  int path_fd = ::open(target.c_str(), oflags | O_PATH | O_CLOEXEC);
  if (path_fd < 0) return -1;
  sockaddr_un a{};
  bool ok = fill(a, "/proc/self/fd/" + std::to_string(path_fd) + rest);
  int r = ok ? op(fd, reinterpret_cast<const sockaddr*>(&a), length(a)) : -1;
  int e = errno;
  ::close(path_fd);
  errno = e;
  return r;
}

}  // namespace

int unix_bind(int fd, const std::string& path) {
  sockaddr_un a;
  if (fill(a, path)) return ::bind(fd, reinterpret_cast<const sockaddr*>(&a), length(a));
  if (errno != ENAMETOOLONG) return -1;
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) {
    errno = EINVAL;
    return -1;
  }
  return via_proc(dir, O_DIRECTORY, "/" + base, ::bind, fd);
}

int unix_connect(int fd, const std::string& path) {
  sockaddr_un a;
  if (fill(a, path)) return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), length(a));
  if (errno != ENAMETOOLONG) return -1;
  return via_proc(path, 0, "", ::connect, fd);
}

int unix_stream_connect(const std::string& path, int flags) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | flags, 0);
  if (fd < 0) return -1;
  if (unix_connect(fd, path) < 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int unix_stream_listen(const std::string& path, int flags, int backlog) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | flags, 0);
  if (fd < 0) return -1;
  if (unix_bind(fd, path) < 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  if (::listen(fd, backlog) < 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    errno = e;
    return -1;
  }
  return fd;
}

}  // namespace img
