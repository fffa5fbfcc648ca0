// The virtio-blk request parser (virtio 1.2 §5.2.6): turns a validated descriptor chain into a
// Request the backend can run, or a ParseError. Parse, then act: every check happens here,
// before any I/O: the header is the first descriptor (device-readable, 16 bytes, copied), the
// status byte is the last descriptor (device-writable, at least 1 byte), the data descriptors
// between have the direction the type needs, lengths are multiples of 512 where the spec says
// so, per-descriptor and per-request caps hold, and sector ranges lie inside the capacity with
// overflow-checked arithmetic. Discard and write-zeroes segments are copied out of guest memory
// before they are checked.
//
// Thread-safety: pure functions.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "virtio/queue.h"

namespace vmm::virtio::blk {

// What the device advertises and enforces.
struct Limits {
  uint64_t capacity_sectors = 0;
  uint32_t seg_max = 0;   // data descriptors per request
  uint32_t size_max = 0;  // bytes per data descriptor
  uint32_t max_discard_sectors = 0;
  uint32_t max_discard_seg = 0;
  uint32_t max_write_zeroes_sectors = 0;
  uint32_t max_write_zeroes_seg = 0;
  bool read_only = false;
  bool discard = false;       // VIRTIO_BLK_F_DISCARD negotiated
  bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES negotiated
};

enum class RequestType { kIn, kOut, kFlush, kGetId, kDiscard, kWriteZeroes };

struct ZeroRange {
  uint64_t offset = 0;  // bytes
  uint64_t length = 0;
  bool unmap = false;
};

struct Request {
  RequestType type = RequestType::kIn;
  uint64_t offset = 0;     // bytes (IN, OUT)
  std::vector<iovec> iov;  // data, pointing into guest memory (IN, OUT, GET_ID)
  uint64_t data_len = 0;
  std::vector<ZeroRange> ranges;  // DISCARD, WRITE_ZEROES
  uint8_t* status = nullptr;      // the status byte in guest memory
};

struct ParseError {
  uint8_t* status = nullptr;  // where to report, or nullptr: the chain has no usable status byte
  uint8_t code = 0;           // kSIoErr or kSUnsupp
  std::string why;
};

std::expected<Request, ParseError> parse_request(const DescriptorChain& chain,
                                                 const Limits& limits);

// Bytes the device writes into the chain's writable buffers on success (used ring length).
uint32_t used_length(const Request& req);

}  // namespace vmm::virtio::blk
