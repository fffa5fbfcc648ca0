// NetDevice: virtio-net on a tap (virtio 1.2 §5.1). Queue 0 is receiveq1, queue 1 transmitq1;
// no control queue and one queue pair. Features offered: MAC (from the options, else a locally
// administered address derived from the tap's name, so a VM keeps its address across runs),
// STATUS (link up), MRG_RXBUF, and the checksum and TSO offloads only where the tap accepts them
// (Tap::supported_offloads): CSUM + GUEST_CSUM, HOST/GUEST_TSO4/6, HOST/GUEST_ECN. At DRIVER_OK
// the tap is told to hand us only the offloads the guest negotiated (TUNSETOFFLOAD).
//
// Both directions run on the QueueServer's loop, never on a vCPU thread. Transmit: each chain is
// parsed (net_request.h) and written to the tap with one writev of the validated header and the
// guest's own buffers (no copy), in order; a tap that is full makes the writer wait for POLLOUT.
// Receive is driven by the tap's readability while the guest has buffers posted: one packet is
// read, then copied into one buffer (or, with MRG_RXBUF, as many as it needs, num_buffers set);
// when the buffers run short the packet waits for more, so none is lost to a slow guest. A
// packet that cannot fit a buffer without MRG_RXBUF is dropped with a log line.
//
// Hostile chains (net_request.h) complete with used length 0 and a rate-limited log line.
// Reset drops the parked chains and a packet held for buffers.
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock; the
// worker runs on its QueueServer thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "img/io_loop.h"
#include "virtio/net/tap.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::net {

using Mac = std::array<uint8_t, 6>;

// A locally administered unicast address (IEEE 802: bit 1 of the first byte set, bit 0 clear)
// hashed from seed: the same seed gives the same address.
Mac stable_mac(const std::string& seed);
std::string format_mac(const Mac& m);

// Counters since the device was made (resets keep them), as `ip -s link` counts: frames and
// bytes without the vnet header; tx_dropped = frames the tap refused; tx_errors = chains refused
// as malformed; rx_dropped = packets from the tap that no guest buffer could take. Written by the
// device's loop thread, read from any thread.
struct NetStats {
  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_dropped{0};
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_dropped{0}, tx_errors{0};
};

struct NetOptions {
  TapSpec tap;
  std::optional<Mac> mac;
  uint16_t queue_size = 256;
};

class NetWorker;

class NetDevice final : public VirtioDevice {
 public:
  static img::Result<std::unique_ptr<NetDevice>> create(const NetOptions& opts,
                                                        img::IoLoop::Options loop_opts = {});
  ~NetDevice() override;

  const std::string& tap_name() const { return tap_->name(); }
  const Mac& mac() const { return mac_; }
  const NetStats& stats() const { return stats_; }

  uint16_t device_type() const override;
  uint64_t device_features() const override;
  bool accept_features(uint64_t features) const override;
  uint16_t num_queues() const override { return 2; }
  uint16_t queue_max_size() const override { return queue_size_; }
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t, std::span<const uint8_t>) override {}  // §5.1.4: read-only here
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

 private:
  NetDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<Tap> tap, Mac mac,
            uint16_t queue_size);

  std::unique_ptr<img::IoLoop> loop_;
  std::unique_ptr<Tap> tap_;
  Mac mac_;
  uint16_t queue_size_;
  NetStats stats_;
  std::unique_ptr<NetWorker> worker_;
};

}  // namespace vmm::virtio::net
