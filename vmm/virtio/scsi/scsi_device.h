// ScsiDevice: virtio-scsi (virtio 1.2 §5.6), one controller with one target (0) whose logical
// units 0..N-1 are libimg images (raw or qcow2). Queues: controlq (task management and
// asynchronous notification queries), eventq (parameter-change events after a resize), and one
// request queue. Feature bits: CHANGE only (no INOUT, HOTPLUG or T10_PI). The configuration space
// (§5.6.4) advertises the limits; the driver may write sense_size and cdb_size, which the device
// uses from the next DRIVER_OK on.
//
// At DRIVER_OK a ScsiWorker starts on the device's IoLoop (scsi_worker.h); reset() drains the
// commands in flight and stops it.
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "virtio/scsi/cdb.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::scsi {

class ScsiWorker;

struct ScsiLun {
  std::unique_ptr<img::BlockDriver> disk;
  bool read_only = false;   // also set when the driver is read-only
  bool write_cache = true;  // false (cache=writethrough): every write is flushed before GOOD
  std::string serial;       // VPD 0x80 / 0x83
};

struct ScsiOptions {
  uint16_t queue_size = 256;
};

class ScsiDevice final : public VirtioDevice {
 public:
  static constexpr size_t kMaxLuns = 256;
  static constexpr uint32_t kMaxSectors = 2048;  // 1 MiB per command (VPD 0xb0 agrees)

  // The loop is the one the disks were opened on; it moves to the I/O thread while it runs.
  static img::Result<std::unique_ptr<ScsiDevice>> create(std::unique_ptr<img::IoLoop> loop,
                                                         std::vector<ScsiLun> luns,
                                                         const ScsiOptions& opts = {});
  ~ScsiDevice() override;

  uint16_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 3; }
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

  const LunInfo& lun_info(size_t i) const { return infos_[i]; }
  size_t lun_count() const { return luns_.size(); }
  // Grows LUN i to new_size bytes (a multiple of 512, never smaller; not a read-only LUN); a
  // running guest gets a unit attention and, with CHANGE, an event (scsi_worker.h).
  img::Status resize(size_t i, uint64_t new_size);

 private:
  ScsiDevice(std::unique_ptr<img::IoLoop> loop, std::vector<ScsiLun> luns, const ScsiOptions& opts);

  std::unique_ptr<img::IoLoop> loop_;
  std::vector<ScsiLun> luns_;
  std::vector<LunInfo> infos_;
  ScsiOptions opts_;
  std::vector<uint8_t> config_;
  std::unique_ptr<ScsiWorker> worker_;
};

// What --scsi asks for: an image to open as one LUN.
struct ScsiDiskConfig {
  std::string path;
  std::string format;  // "raw", "qcow2", or "" to probe
  bool read_only = false;
  bool direct = false;      // cache=none: O_DIRECT
  bool write_cache = true;  // cache=writethrough: false
};

// Opens every image on one new loop and builds the device (LUN i = configs[i]).
img::Result<std::unique_ptr<ScsiDevice>> make_scsi_device(
    const std::vector<ScsiDiskConfig>& configs, img::IoLoop::Options loop_opts = {});

}  // namespace vmm::virtio::scsi
