// HostPages: the balloon's 4 KiB pages gathered into the bigger host pages behind them. A guest
// balloons 4 KiB pages one at a time (§5.5.6), but a 2 MiB huge page can go back to the host
// only whole, so the device counts the ballooned 4 KiB pages of each huge page and gives it back
// once the guest holds all of them; a deflated page makes it partial again (the host refaults
// the whole page when the guest touches it), and inflating that page again completes it again.
//
// Memory follows guest RAM, not guest requests: at most one entry per host page that holds a
// ballooned page (a 4 GiB guest on 2 MiB pages: at most 2048 entries of 64 bytes). The caller
// passes only addresses inside guest RAM. Not thread-safe: one balloon worker owns it.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace vmm::virtio::balloon {

class HostPages {
 public:
  // The 4 KiB page at gpa, inside a host page of host_page bytes (a power of two, a multiple of
  // 4 KiB), is now in the balloon. True when that made every 4 KiB page of its host page
  // ballooned: the caller gives back [gpa & ~(host_page - 1), +host_page). A page inflated twice
  // counts once.
  bool inflate(uint64_t gpa, uint64_t host_page);
  // The 4 KiB page at gpa has left the balloon.
  void deflate(uint64_t gpa, uint64_t host_page);
  // Host pages holding some but not all of their 4 KiB pages in the balloon: memory the guest
  // gave up that the host cannot take back yet.
  uint64_t partial() const { return partial_; }
  void clear() {
    pages_.clear();
    partial_ = 0;
  }

 private:
  struct Entry {
    std::vector<uint64_t> bits;  // one per 4 KiB page of the host page
    uint32_t count = 0;
    uint32_t total = 0;
  };
  std::unordered_map<uint64_t, Entry> pages_;  // by host page base
  uint64_t partial_ = 0;
};

}  // namespace vmm::virtio::balloon
