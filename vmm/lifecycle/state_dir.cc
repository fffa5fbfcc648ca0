#include "lifecycle/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace vmm::lifecycle {

namespace fs = std::filesystem;

std::vector<std::string> StateDir::names() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::string f = e.path().filename().string();
    if (f.size() > 5 && f.ends_with(".json") && f[0] != '.' && e.is_regular_file(ec)) {
      out.push_back(f.substr(0, f.size() - 5));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

img::Result<std::string> default_state_dir() {
  const char* xdg = std::getenv("XDG_STATE_HOME");
  // XDG Base Directory spec: a relative $XDG_STATE_HOME is invalid and is ignored.
  if (xdg && xdg[0] == '/') return std::string(xdg) + "/vmm";
  if (::geteuid() == 0) return std::string("/var/lib/vmm");
  const char* home = std::getenv("HOME");
  if (!home || home[0] != '/') {
    return img::invalid_argument("neither $XDG_STATE_HOME nor $HOME is set: give --state-dir DIR");
  }
  return std::string(home) + "/.local/state/vmm";
}

FileLock& FileLock::operator=(FileLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

int FileLock::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

img::Result<FileLock> FileLock::acquire(const std::string& path, int op, bool create,
                                        bool cloexec) {
  int flags = O_RDWR | (create ? O_CREAT : 0) | (cloexec ? O_CLOEXEC : 0);
  int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0 && errno == EACCES && !create) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return img::io_error(errno, "opening " + path);
  while (::flock(fd, op) < 0) {
    if (errno == EINTR) continue;
    int e = errno;
    ::close(fd);
    return img::io_error(e, "locking " + path);
  }
  return FileLock(fd);
}

bool lock_held(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int r;
  do {
    r = ::flock(fd, LOCK_SH | LOCK_NB);
  } while (r < 0 && errno == EINTR);
  bool held = r < 0 && errno == EWOULDBLOCK;
  ::close(fd);  // drops our shared lock, if we got it
  return held;
}

bool is_vmm_run(pid_t pid, const std::string& control_path) {
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  std::vector<std::string> argv;
  std::string cur;
  for (char c : ss.str()) {
    if (c == '\0') {
      argv.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (argv.size() < 2 || argv[1] != "run") return false;
  if (fs::path(argv[0]).filename() != "vmm") return false;
  for (size_t i = 2; i + 1 < argv.size(); ++i) {
    if (argv[i] == "--control" && argv[i + 1] == control_path) return true;
  }
  return false;
}

std::optional<pid_t> read_pid(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!f || !std::getline(f, s) || s.empty() || s.size() > 10) return std::nullopt;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  long v = std::strtol(s.c_str(), nullptr, 10);
  if (v <= 0 || v > 0x7fffffff) return std::nullopt;
  return static_cast<pid_t>(v);
}

img::Status write_pid(const std::string& path, pid_t pid) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << pid << "\n";
    if (!f.flush()) return img::io_error(errno, "writing " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) return img::io_error(errno, "renaming " + tmp);
  return {};
}

const char* state_text(VmState s) {
  switch (s) {
    case VmState::kShutOff:
      return "shut off";
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kNoState:
      break;
  }
  return "no state";
}

}  // namespace vmm::lifecycle

namespace vmm::lifecycle {

img::Status write_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return img::io_error(errno, "creating " + tmp);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  int e = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) < 0) {
    if (ok) e = errno;
    ::unlink(tmp.c_str());
    return img::io_error(e, "writing " + path);
  }
  return {};
}

img::Status make_dirs(const std::string& d) {
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) return img::io_error(ec.value(), "creating " + d);
  return {};
}

img::Result<std::string> read_locked(const FileLock& lock, const std::string& path) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::pread(lock.fd(), buf, sizeof buf, static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return img::io_error(errno, "reading " + path);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (16u << 20)) return img::invalid_argument(path + " is larger than 16 MiB");
  }
  return text;
}

}  // namespace vmm::lifecycle
