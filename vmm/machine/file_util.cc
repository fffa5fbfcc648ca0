#include "machine/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace vmm {

img::Result<std::vector<uint8_t>> read_whole_file(const std::string& path, const char* what,
                                                  uint64_t max_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return img::io_error(errno, std::string("cannot open ") + what + " " + path);
  struct stat st{};
  if (::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return img::invalid_argument(std::string(what) + " " + path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_size) {
    ::close(fd);
    return img::invalid_argument(img::strfmt("%s too big for %llu MiB of memory: %s is %llu bytes",
                                             what, (unsigned long long)(max_size >> 20),
                                             path.c_str(), (unsigned long long)st.st_size));
  }
  std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      return img::io_error(e, std::string("reading ") + what + " " + path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return buf;
}

}  // namespace vmm
