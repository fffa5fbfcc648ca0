// ConsoleDevice: virtio-console (virtio 1.2 §5.3). Port 0 is the guest's console (hvc0); queue 0
// is its receiveq (host to guest), queue 1 its transmitq (guest to host). Features offered:
// VIRTIO_CONSOLE_F_SIZE (cols/rows in the configuration, the terminal's size when stdout is one,
// else the configured default), VIRTIO_CONSOLE_F_EMERG_WRITE (a byte written to emerg_wr goes
// straight to the console's output, §5.3.4) and, when named ports are configured,
// VIRTIO_CONSOLE_F_MULTIPORT (virtio-serial): port N >= 1 is a named port (Linux's
// /dev/vport*pN, with /sys/class/virtio-ports/*/name), on queues 2N+2 (receive) and 2N+3
// (transmit); queues 2 and 3 carry the control messages of control.h. Port 0 exists only with a
// console host, as QEMU keeps port 0 for virtconsole. A driver that does not take MULTIPORT sees
// the console alone.
//
// Each port has its own host end (ConsoleHost). Host input for a named port is read only while
// the guest has the port open (Linux drops data for a closed port); when the host end goes away
// (end of input, or output refused) the driver is told PORT_OPEN(0), so guest reads see end of
// file. Receive buffers are never given back empty: a driver re-queues an empty buffer at once,
// so that would spin; they stay parked until input comes or the device resets.
//
// Resize: resize() (any thread) changes cols/rows: with MULTIPORT a RESIZE control message for
// the console port, else the configuration with a config-change interrupt (§5.3.4). The VMM
// calls host_resized() on SIGWINCH.
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
#include <mutex>
#include <string>
#include <utility>
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
inline constexpr uint16_t kControlReceiveQueue = 2;   // device to driver (MULTIPORT)
inline constexpr uint16_t kControlTransmitQueue = 3;  // driver to device
// Named ports at most (QEMU's virtio-serial default max_ports is 31, port 0 included).
inline constexpr size_t kMaxNamedPorts = 30;
// Port n's receive queue (its transmit queue is the next one).
inline constexpr uint16_t port_receive_queue(uint32_t port) {
  return static_cast<uint16_t>(port == 0 ? 0 : 2 * port + 2);
}

struct SerialPortOptions {
  std::string name;  // control.h check_port_name
  ConsoleHostSpec host;
};

struct ConsoleOptions {
  ConsoleHostSpec host;     // port 0, the console
  bool has_console = true;  // false: no port 0 (only named ports)
  std::vector<SerialPortOptions> ports;  // ports 1..N; MULTIPORT is offered when there are any
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
  uint16_t num_queues() const override;
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return cfg::kSize; }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

  // A new console size (any thread): see the top of the file.
  void resize(uint16_t cols, uint16_t rows);
  // The console's terminal may have changed size (SIGWINCH): resize() to it if it is a terminal.
  void host_resized();
  std::pair<uint16_t, uint16_t> size() const;  // cols, rows

 private:
  ConsoleDevice(std::unique_ptr<img::IoLoop> loop, std::vector<std::unique_ptr<ConsoleHost>> hosts,
                const ConsoleOptions& opts, int resize_fd);
  bool multiport() const { return !opts_.ports.empty(); }
  uint32_t max_nr_ports() const { return static_cast<uint32_t>(opts_.ports.size() + 1); }

  std::unique_ptr<img::IoLoop> loop_;
  std::vector<std::unique_ptr<ConsoleHost>> hosts_;  // by port id; [0] null without a console
  ConsoleOptions opts_;
  int resize_fd_;  // eventfd: resize() happened; the worker tells the driver
  mutable std::mutex config_mu_;
  std::vector<uint8_t> config_;  // guarded by config_mu_
  std::unique_ptr<ConsoleWorker> worker_;
};

}  // namespace vmm::virtio::console
