// A guest-side split virtqueue (virtio 1.2 §2.7) in fake guest RAM, for tests that drive a
// Virtqueue or a QueueServer directly, without the PCI transport: descriptor table at base,
// avail ring at base + 0x1000, used ring at base + 0x2000 (queue size <= 256).
//
// Thread-safety: test thread only; the device side sees only the RAM.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "virtio/queue.h"
#include "virtio/virtio_device.h"
#include "virtio/virtio_spec.h"
#include "virtio_test_util.h"

namespace vmm::testing {

struct FakeRing {
  FakeRing(GuestRam& r, uint64_t b, uint16_t n) : ram(r), base(b), size(n) {
    std::memset(ram.at(base), 0, 0x3000);
  }
  uint64_t desc_gpa(uint16_t i) const { return base + 16ull * i; }
  uint64_t avail_gpa() const { return base + 0x1000; }
  uint64_t used_gpa() const { return base + 0x2000; }
  virtio::QueueConfig config() const { return {size, base, avail_gpa(), used_gpa()}; }

  void write_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    ram.put<uint64_t>(desc_gpa(i), addr);
    ram.put<uint32_t>(desc_gpa(i) + 8, len);
    ram.put<uint16_t>(desc_gpa(i) + 12, flags);
    ram.put<uint16_t>(desc_gpa(i) + 14, next);
  }
  void make_available(uint16_t head) {
    ram.put<uint16_t>(avail_gpa() + 4 + 2 * (avail_idx % size), head);
    ++avail_idx;
    __atomic_store_n(reinterpret_cast<uint16_t*>(ram.at(avail_gpa() + 2)), avail_idx,
                     __ATOMIC_RELEASE);
  }
  void set_avail_idx(uint16_t v) {
    avail_idx = v;
    __atomic_store_n(reinterpret_cast<uint16_t*>(ram.at(avail_gpa() + 2)), v, __ATOMIC_RELEASE);
  }
  void set_avail_flags(uint16_t f) { ram.put<uint16_t>(avail_gpa(), f); }
  void set_used_event(uint16_t v) { ram.put<uint16_t>(avail_gpa() + 4 + 2ull * size, v); }
  uint16_t used_idx() const {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(ram.at(used_gpa() + 2)), __ATOMIC_ACQUIRE);
  }
  std::pair<uint32_t, uint32_t> used_elem(uint16_t i) const {
    uint64_t e = used_gpa() + 4 + 8ull * (i % size);
    return {ram.get<uint32_t>(e), ram.get<uint32_t>(e + 4)};
  }

  GuestRam& ram;
  uint64_t base;
  uint16_t size;
  uint16_t avail_idx = 0;
};

// A VirtioInterrupt that counts.
struct CountingInterrupt : virtio::VirtioInterrupt {
  void signal_used(uint16_t q) override { used[q].fetch_add(1); }
  void signal_config_change() override { config.fetch_add(1); }
  void device_error(const std::string& why) override {
    std::lock_guard l(mu);
    errors.push_back(why);
  }
  size_t error_count() {
    std::lock_guard l(mu);
    return errors.size();
  }
  std::atomic<uint64_t> used[4] = {};
  std::atomic<uint64_t> config{0};
  std::mutex mu;
  std::vector<std::string> errors;
};

// An ActiveQueue over ring with a fresh notification eventfd (closed by the caller: kick_fd).
inline virtio::ActiveQueue active_queue(const GuestMemory& mem, const FakeRing& ring,
                                        uint16_t index, bool event_idx, bool indirect) {
  auto q = virtio::Virtqueue::create(mem, ring.config(), event_idx, indirect);
  return virtio::ActiveQueue{index, std::move(*q), eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
}

inline void kick(int fd) {
  uint64_t one = 1;
  (void)!write(fd, &one, 8);
}

}  // namespace vmm::testing
