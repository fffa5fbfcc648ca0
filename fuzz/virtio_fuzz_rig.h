// The guest side every virtio request fuzzer shares: the input becomes guest memory holding one
// split virtqueue (virtio 1.2 §2.7) and whatever its descriptors point at, and the device side
// pops every available chain, lets the target parse and act on it, and completes it.
//
// Input layout (the seed scripts in testdata/fuzz/ write it): 4 control bytes, then guest memory
// at kGuestBase. Control byte 0 picks the queue size (1 << (b % 9): 1..256), byte 1 bit 0
// VIRTIO_F_EVENT_IDX and bit 1 VIRTIO_F_INDIRECT_DESC; bytes 2 and 3 are the target's own. The
// descriptor table sits at +0, the avail ring at +0x1000, the used ring at +0x2000.
// Guest memory is exactly mem_size bytes of heap, so AddressSanitizer flags any access past it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "kvm/guest_memory.h"
#include "virtio/queue.h"

namespace vmm::fuzz {

inline constexpr uint64_t kGuestBase = 0x100000;
inline constexpr size_t kControlBytes = 4;

class VirtioFuzzRig {
 public:
  // Null when the input is too short for the control bytes or the queue does not fit.
  static std::unique_ptr<VirtioFuzzRig> make(const uint8_t* data, size_t size, size_t mem_size) {
    if (size < kControlBytes) return nullptr;
    auto rig = std::make_unique<VirtioFuzzRig>(data, size, mem_size);
    if (!rig->create_queue()) return nullptr;
    return rig;
  }

  VirtioFuzzRig(const uint8_t* data, size_t size, size_t mem_size)
      : ctrl_{data[0], data[1], data[2], data[3]}, mem_(mem_size, 0) {
    std::memcpy(mem_.data(), data + kControlBytes, std::min(size - kControlBytes, mem_size));
  }
  // The queue points into mem_ through gm_: neither may move.
  VirtioFuzzRig(VirtioFuzzRig&&) = delete;

  uint8_t ctrl(int i) const { return ctrl_[i]; }
  const GuestMemory& memory() const { return gm_; }

  // Pops every available chain (at most 512: a queue yields at most `size` chains per index
  // wrap, and a hostile avail index must not keep the loop going), reads it, and completes it
  // with the used length `handle(chain)` returns. A chain the queue refuses is completed with
  // length 0, as the queue server does.
  template <class Handle>
  void for_each_chain(Handle&& handle) {
    for (int i = 0; i < 512; ++i) {
      auto head = q_->pop_avail();
      if (!head || !*head) break;
      auto chain = q_->read_chain(**head);
      uint32_t used = chain ? handle(*chain) : 0;
      q_->add_used(**head, used);
    }
    q_->publish_used();
  }

 private:
  bool create_queue() {
    gm_.add_region(kGuestBase, mem_.size(), mem_.data());
    virtio::QueueConfig cfg;
    cfg.size = uint16_t(1u << (ctrl_[0] % 9));
    cfg.desc = kGuestBase;
    cfg.avail = kGuestBase + 0x1000;
    cfg.used = kGuestBase + 0x2000;
    auto q = virtio::Virtqueue::create(gm_, cfg, ctrl_[1] & 1, ctrl_[1] & 2);
    if (!q) return false;
    q_.emplace(std::move(*q));
    return true;
  }

  uint8_t ctrl_[kControlBytes];
  std::vector<uint8_t> mem_;
  GuestMemory gm_;
  std::optional<virtio::Virtqueue> q_;
};

}  // namespace vmm::fuzz
