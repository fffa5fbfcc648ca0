// qemu-img's progress line (util/qemu-progress.c): "    (42.00/100%)\r" on stdout, redrawn at
// most once per percent, ended with a newline. Shared by the subcommands that take -p.
#pragma once

#include <cstdint>
#include <cstdio>

namespace imgcli {

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    double pct = total ? static_cast<double>(done) * 100.0 / static_cast<double>(total) : 100.0;
    if (shown_ >= 0 && pct < shown_ + 1.0 && pct < 100.0) return;
    shown_ = pct;
    std::printf("    (%3.2f/100%%)\r", pct);
    std::fflush(stdout);
  }
  void finish() {
    if (!enabled_) return;
    std::printf("    (100.00/100%%)\r\n");
    std::fflush(stdout);
  }

 private:
  bool enabled_;
  double shown_ = -1;
};

}  // namespace imgcli
