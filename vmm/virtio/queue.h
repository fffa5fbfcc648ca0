// Virtqueue: the device side of one split virtqueue (virtio 1.2 §2.7) over guest memory. Ring
// addresses are validated once when the queue is activated; every descriptor is copied out of
// guest memory and then checked (address and length inside guest memory with overflow-checked
// arithmetic, chain length capped at the queue size so loops end, indirect tables bounded and
// never nested, readable descriptors before writable ones). A malformed chain is an error for that
// chain only; a broken ring (avail index running ahead by more than the queue size, a head out of
// range) is an error for the whole queue, and the device then sets DEVICE_NEEDS_RESET.
//
// Memory ordering follows §2.7.13: the avail index is read with acquire before the ring entries
// it covers; used elements are written before the used index is published with release; a full
// fence separates publishing from reading the driver's suppression fields (used_event /
// avail flags), so no notification is lost.
//
// Thread-safety: a Virtqueue belongs to one thread (the device's I/O thread) once activated. The
// guest writes the rings concurrently; that is what the copying and ordering above are for.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "img/status.h"
#include "kvm/guest_memory.h"

namespace vmm::virtio {

// The driver's queue setup from the common configuration (§4.1.4.3).
struct QueueConfig {
  uint16_t size = 0;
  uint64_t desc = 0;   // queue_desc: descriptor table
  uint64_t avail = 0;  // queue_driver: available ring
  uint64_t used = 0;   // queue_device: used ring
};

// One validated descriptor, translated to host memory.
struct Descriptor {
  uint8_t* host = nullptr;
  uint32_t len = 0;
  bool device_writable = false;
};

struct DescriptorChain {
  uint16_t head = 0;
  std::vector<Descriptor> descs;  // in chain order, indirect entries expanded
};

class Virtqueue {
 public:
  // Fails if the rings are misaligned or do not lie inside guest memory.
  static img::Result<Virtqueue> create(const GuestMemory& mem, const QueueConfig& cfg,
                                       bool event_idx, bool indirect);

  uint16_t size() const { return size_; }

  // The next available chain's head, or nullopt if the ring is empty. An error means the ring
  // is broken and the queue must stop.
  img::Result<std::optional<uint16_t>> pop_avail();
  // Reads and validates the chain starting at head (head < size()). An error concerns this
  // chain only: return it with add_used(head, 0) and carry on.
  img::Result<DescriptorChain> read_chain(uint16_t head) const;

  // Writes a used element; the driver sees it after publish_used().
  void add_used(uint16_t head, uint32_t len);
  // Publishes the used index; true if the driver asked for an interrupt (§2.7.10).
  bool publish_used();

  // Notification suppression around draining (§2.7.7, §2.7.10). enable_notifications() returns
  // true if more buffers arrived meanwhile, so the caller drains again instead of sleeping.
  void disable_notifications();
  bool enable_notifications();

 private:
  Virtqueue() = default;
  uint16_t load_avail_idx() const;

  const GuestMemory* mem_ = nullptr;
  uint16_t size_ = 0;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint16_t last_avail_ = 0;      // next avail ring slot to consume
  uint16_t shadow_avail_ = 0;    // avail->idx as last read
  uint16_t next_used_ = 0;       // next used ring slot to fill
  uint16_t published_used_ = 0;  // used->idx as last published
};

}  // namespace vmm::virtio
