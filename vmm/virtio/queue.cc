#include "virtio/queue.h"

#include <atomic>
#include <cstring>

#include "virtio/virtio_spec.h"

namespace vmm::virtio {
namespace {

// The driver writes these fields concurrently; access them atomically (they are naturally
// aligned: create() checks the ring alignment).
uint16_t load16(const uint8_t* p, int order) {
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), order);
}
void store16(uint8_t* p, uint16_t v, int order) {
  __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, order);
}

// §2.7.5 struct virtq_desc, copied out of guest memory before any field is used.
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == kDescSize);

}  // namespace

img::Result<Virtqueue> Virtqueue::create(const GuestMemory& mem, const QueueConfig& cfg,
                                         bool event_idx, bool indirect) {
  if (cfg.size == 0 || cfg.size > kMaxQueueSize) {
    return img::invalid_argument(img::strfmt("virtqueue: size %u", cfg.size));
  }
  // §2.7: descriptor table 16-byte aligned, available ring 2, used ring 4.
  if (cfg.desc % 16 || cfg.avail % 2 || cfg.used % 4) {
    return img::invalid_argument("virtqueue: misaligned ring address");
  }
  uint64_t n = cfg.size;
  Virtqueue q;
  q.mem_ = &mem;
  q.size_ = cfg.size;
  q.event_idx_ = event_idx;
  q.indirect_ = indirect;
  q.desc_ = mem.translate(cfg.desc, n * kDescSize);
  q.avail_ = mem.translate(cfg.avail, 6 + 2 * n);  // flags, idx, ring[n], used_event
  q.used_ = mem.translate(cfg.used, 6 + 8 * n);    // flags, idx, ring[n], avail_event
  if (!q.desc_ || !q.avail_ || !q.used_) {
    return img::invalid_argument("virtqueue: ring outside guest memory");
  }
  return q;
}

uint16_t Virtqueue::load_avail_idx() const { return load16(avail_ + 2, __ATOMIC_ACQUIRE); }

img::Result<std::optional<uint16_t>> Virtqueue::pop_avail() {
  if (shadow_avail_ == last_avail_) {
    shadow_avail_ = load_avail_idx();
    if (shadow_avail_ == last_avail_) return std::nullopt;
    uint16_t pending = static_cast<uint16_t>(shadow_avail_ - last_avail_);
    if (pending > size_) {
      return img::invalid_argument(
          img::strfmt("virtqueue: avail index %u is %u ahead of %u (queue size %u)", shadow_avail_,
                      pending, last_avail_, size_));
    }
  }
  uint16_t head = load16(avail_ + 4 + 2 * (last_avail_ % size_), __ATOMIC_RELAXED);
  ++last_avail_;
  if (head >= size_) {
    return img::invalid_argument(img::strfmt("virtqueue: avail head %u out of range", head));
  }
  return head;
}

img::Result<DescriptorChain> Virtqueue::read_chain(uint16_t head) const {
  DescriptorChain chain;
  chain.head = head;
  chain.descs.reserve(4);
  const uint8_t* table = desc_;
  uint32_t table_len = size_;
  bool in_indirect = false;
  bool seen_writable = false;
  uint32_t idx = head;
  // §2.7.5.3.1: a chain (indirect entries included) is never longer than the queue size; the cap
  // also ends loops.
  while (true) {
    if (chain.descs.size() >= size_) {
      return img::invalid_argument(img::strfmt(
          "virtqueue: chain at head %u longer than queue size %u (loop?)", head, size_));
    }
    if (idx >= table_len) {
      return img::invalid_argument(img::strfmt("virtqueue: descriptor index %u out of %u%s", idx,
                                               table_len, in_indirect ? " (indirect)" : ""));
    }
    VirtqDesc d;
    std::memcpy(&d, table + uint64_t{idx} * kDescSize, sizeof d);
    if (d.flags & kDescFIndirect) {
      if (!indirect_) return img::invalid_argument("virtqueue: indirect descriptor not negotiated");
      if (in_indirect) return img::invalid_argument("virtqueue: nested indirect descriptor");
      if (d.flags & kDescFNext) {
        return img::invalid_argument("virtqueue: INDIRECT together with NEXT");
      }
      if (d.len == 0 || d.len % kDescSize) {
        return img::invalid_argument(img::strfmt("virtqueue: indirect table length %u", d.len));
      }
      const uint8_t* t = mem_->translate(d.addr, d.len);
      if (!t) return img::invalid_argument("virtqueue: indirect table outside guest memory");
      table = t;
      table_len = d.len / kDescSize;
      in_indirect = true;
      idx = 0;
      continue;
    }
    uint8_t* host = mem_->translate(d.addr, d.len);
    if (!host) {
      return img::invalid_argument(
          img::strfmt("virtqueue: descriptor 0x%llx+0x%x outside guest memory",
                      static_cast<unsigned long long>(d.addr), d.len));
    }
    bool writable = d.flags & kDescFWrite;
    if (!writable && seen_writable) {
      return img::invalid_argument("virtqueue: device-readable descriptor after a writable one");
    }
    seen_writable |= writable;
    chain.descs.push_back({host, d.len, writable});
    if (!(d.flags & kDescFNext)) break;
    idx = d.next;
  }
  return chain;
}

void Virtqueue::add_used(uint16_t head, uint32_t len) {
  uint8_t* elem = used_ + 4 + 8 * uint64_t{static_cast<uint16_t>(next_used_ % size_)};
  uint32_t id = head;
  std::memcpy(elem, &id, 4);
  std::memcpy(elem + 4, &len, 4);
  ++next_used_;
}

bool Virtqueue::publish_used() {
  uint16_t old = published_used_;
  uint16_t now = next_used_;
  if (old == now) return false;
  store16(used_ + 2, now, __ATOMIC_RELEASE);
  published_used_ = now;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx_) {
    uint16_t used_event = load16(avail_ + 4 + 2 * uint64_t{size_}, __ATOMIC_RELAXED);
    // vring_need_event (§2.7.10): signal if used_event lies in (old, now].
    return static_cast<uint16_t>(now - used_event - 1) < static_cast<uint16_t>(now - old);
  }
  return !(load16(avail_, __ATOMIC_RELAXED) & kAvailFNoInterrupt);
}

void Virtqueue::disable_notifications() {
  // With EVENT_IDX, leaving avail_event behind is enough: the driver only notifies when its
  // index crosses it.
  if (!event_idx_) store16(used_, kUsedFNoNotify, __ATOMIC_RELAXED);
}

bool Virtqueue::enable_notifications() {
  if (event_idx_) {
    store16(used_ + 4 + 8 * uint64_t{size_}, last_avail_, __ATOMIC_RELAXED);
  } else {
    store16(used_, 0, __ATOMIC_RELAXED);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return load_avail_idx() != last_avail_;
}

}  // namespace vmm::virtio
