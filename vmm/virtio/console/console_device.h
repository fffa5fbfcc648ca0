// ConsoleDevice: virtio-console with one port (virtio 1.2 §5.3), the guest's hvc0. Queue 0 is
// port 0's receiveq (host to guest), queue 1 its transmitq (guest to host). Features offered:
// VIRTIO_CONSOLE_F_SIZE (cols/rows in the configuration, the terminal's size when stdout is one,
// else the configured default) and VIRTIO_CONSOLE_F_EMERG_WRITE (a byte written to emerg_wr goes
// straight to the output, §5.3.4).
//
// The worker (on a QueueServer) writes transmit chains to the host in order, without blocking on
// a socket whose peer is slow (it waits for POLLOUT instead), and parks receive chains until host
// input arrives; each receive chain gets as many bytes as there are (used length = bytes). A
// receive chain with a device-readable descriptor, or a transmit chain with a device-writable
// one (§5.3.6.1), is refused with used length 0. Reset drops what is parked: pending receive
// buffers and output not yet written.
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock; the
// worker runs on its QueueServer thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "img/io_loop.h"
#include "virtio/console/console_host.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::console {

// §5.3.3 feature bits and §5.3.4 struct virtio_console_config { le16 cols; le16 rows;
// le32 max_nr_ports; le32 emerg_wr; }.
inline constexpr unsigned kFSize = 0;
inline constexpr unsigned kFMultiport = 1;
inline constexpr unsigned kFEmergWrite = 2;
namespace cfg {
inline constexpr uint32_t kCols = 0;
inline constexpr uint32_t kRows = 2;
inline constexpr uint32_t kMaxNrPorts = 4;
inline constexpr uint32_t kEmergWr = 8;
inline constexpr uint32_t kSize = 12;
}  // namespace cfg
inline constexpr uint16_t kReceiveQueue = 0;
inline constexpr uint16_t kTransmitQueue = 1;

struct ConsoleOptions {
  ConsoleHostSpec host;
  uint16_t cols = 80, rows = 24;  // when the host side is not a terminal
  uint16_t queue_size = 256;
  uint32_t max_request = 64 << 10;  // bytes taken from one chain at most
};

class ConsoleWorker;

class ConsoleDevice final : public VirtioDevice {
 public:
  static img::Result<std::unique_ptr<ConsoleDevice>> create(const ConsoleOptions& opts,
                                                            img::IoLoop::Options loop_opts = {});
  ~ConsoleDevice() override;

  uint16_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 2; }
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return cfg::kSize; }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

 private:
  ConsoleDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<ConsoleHost> host,
                const ConsoleOptions& opts);

  std::unique_ptr<img::IoLoop> loop_;
  std::unique_ptr<ConsoleHost> host_;
  ConsoleOptions opts_;
  std::vector<uint8_t> config_;
  std::unique_ptr<ConsoleWorker> worker_;
};

}  // namespace vmm::virtio::console
