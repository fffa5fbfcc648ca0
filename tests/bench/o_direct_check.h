// Shared by the benchmarks: proves from /proc/self/fdinfo that an image really is open with
// O_DIRECT, so a figure labelled cache=none cannot silently come from the page cache.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace bench {

// 1 if an open descriptor of FILE has O_DIRECT, 0 if one is open without it, -1 if none.
inline int file_opened_direct(const std::string& file) {
  char want[PATH_MAX];
  if (!realpath(file.c_str(), want)) return -1;
  int found = -1;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    std::error_code ec2;
    auto target = std::filesystem::read_symlink(e.path(), ec2);
    if (ec2 || target != want) continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    std::string key, value;
    while (info >> key >> value) {
      if (key == "flags:") {
        if (std::strtoul(value.c_str(), nullptr, 8) & O_DIRECT) return 1;
        found = 0;
      }
    }
  }
  return found;
}

}  // namespace bench
