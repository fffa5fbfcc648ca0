// Helpers for image lock tests: which of QEMU's lock bytes other open files hold on an image,
// and a qemu-io process that holds an image open (the peer a running QEMU would be).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace img::test {

// The bytes of 100..104 (permissions held) and 200..204 (permissions not shared) that some
// open file holds a lock on, probed from a fresh open file of path (F_OFD_GETLK, F_WRLCK:
// what qemu's raw_check_lock_bytes asks). Empty if path does not open.
inline std::vector<int> held_lock_bytes(const std::string& path) {
  std::vector<int> held;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return held;
  for (int base : {100, 200}) {
    for (int i = 0; i < 5; ++i) {
      struct flock fl = {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = base + i;
      fl.l_len = 1;
      if (::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) held.push_back(base + i);
    }
  }
  ::close(fd);
  return held;
}

// qemu-io with `-c "sleep 60000"` on an image, in the background, until destroyed. ready()
// says whether it got the image open (its lock bytes appeared) within a few seconds.
class QemuIoHolder {
 public:
  QemuIoHolder(const std::string& path, std::vector<std::string> flags) {
    std::vector<std::string> argv{"qemu-io"};
    for (auto& f : flags) argv.push_back(f);
    argv.insert(argv.end(), {"-c", "sleep 60000", path});
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid_, "qemu-io", &fa, nullptr, cargv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; pid_ > 0 && i < 500; ++i) {
      if (!held_lock_bytes(path).empty()) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~QemuIoHolder() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int st;
    ::waitpid(pid_, &st, 0);
  }
  bool ready() const { return ready_; }

 private:
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace img::test
