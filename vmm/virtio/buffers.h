// Buffers of one direction from a validated descriptor chain: the request layout of devices
// whose chains carry only data (virtio-rng's requestq §5.4.6, virtio-console's receiveq and
// transmitq §5.3.6). Parse, then act: a descriptor of the wrong direction refuses the whole chain
// (the driver broke a MUST), zero-length descriptors are skipped, and the total is capped so a
// huge chain cannot make the device copy more than it allows per request.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <vector>

#include "virtio/queue.h"

namespace vmm::virtio {

enum class BufferDirection { kDeviceReads, kDeviceWrites };

struct Buffers {
  std::vector<std::span<uint8_t>> spans;  // into guest memory, in chain order, total <= cap
  uint32_t total = 0;                     // bytes across spans
  bool truncated = false;                 // the chain offered more than cap
};

// Fails when a descriptor has the other direction or when the chain holds no bytes at all.
std::expected<Buffers, std::string> collect_buffers(const DescriptorChain& chain,
                                                    BufferDirection dir, uint32_t cap);

// Copies up to src.size() bytes into the spans in order; returns how many were copied.
uint32_t copy_into(const Buffers& b, std::span<const uint8_t> src);

}  // namespace vmm::virtio
