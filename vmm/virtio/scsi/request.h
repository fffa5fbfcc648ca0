// The virtio-scsi request layouts (virtio 1.2 §5.6.6): a validated descriptor chain split into
// the request header (copied out of guest memory), the data-out buffers, the response area and
// the data-in buffers. §2.7.4 Message Framing: the device must not assume how the driver splits
// a request into descriptors, so the header and the response may straddle descriptors; the
// data is whatever follows them in the same direction.
//
// Errors (a header or response area shorter than the negotiated sizes) mean the chain has no
// usable response: the device returns it with used length 0.
//
// Thread-safety: pure functions.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "virtio/queue.h"

namespace vmm::virtio::scsi {

// Where the device writes its response: spans in guest memory, size bytes in all.
struct ResponseArea {
  std::vector<std::span<uint8_t>> spans;
  uint32_t size = 0;
  // Scatters bytes (at most size) into the spans.
  void write(std::span<const uint8_t> bytes) const;
};

struct CmdRequest {
  std::array<uint8_t, 8> lun{};
  uint64_t tag = 0;
  std::vector<uint8_t> cdb;  // cdb_size bytes
  std::vector<iovec> data_out;
  std::vector<iovec> data_in;
  uint64_t out_len = 0;
  uint64_t in_len = 0;
  ResponseArea resp;  // kCmdRespHeader + sense_size bytes
};

std::expected<CmdRequest, std::string> parse_cmd_chain(const DescriptorChain& chain,
                                                       uint32_t cdb_size, uint32_t sense_size);

// The response to a command (§5.6.6.1): sense is cut to sense_size by the caller's area.
std::vector<uint8_t> encode_cmd_resp(uint8_t response, uint8_t status, uint32_t resid,
                                     std::span<const uint8_t> sense, uint32_t sense_size);

// §5.6.6.1 LUN addressing: lun[0] = 1, lun[1] = target, lun[2..3] = 0x4000 | LUN (flat space)
// or a peripheral-addressed LUN below 256, lun[4..7] = 0. The LUN on target 0, or nullopt for
// any other address (the device answers VIRTIO_SCSI_S_BAD_TARGET).
std::optional<uint16_t> decode_lun(std::span<const uint8_t, 8> lun, uint16_t num_luns);

struct CtrlRequest {
  uint32_t type = 0;
  uint32_t subtype = 0;  // TMF
  std::array<uint8_t, 8> lun{};
  uint64_t tag = 0;  // TMF: the task an ABORT_TASK / QUERY_TASK names
  ResponseArea resp;
};

// controlq (§5.6.6.2): a TMF (24 bytes, 1-byte response) or an AN query/subscribe (16 bytes,
// 5-byte response). An unknown type gets no response area: used length 0.
std::expected<CtrlRequest, std::string> parse_ctrl_chain(const DescriptorChain& chain);

// The first n bytes of iov (REQUIRES: n <= the total).
std::vector<iovec> iov_prefix(const std::vector<iovec>& iov, uint64_t n);
// Copies between guest buffers and a host buffer; return bytes copied.
uint64_t copy_to_iov(const std::vector<iovec>& iov, std::span<const uint8_t> src);
uint64_t copy_from_iov(const std::vector<iovec>& iov, std::span<uint8_t> dst);

}  // namespace vmm::virtio::scsi
