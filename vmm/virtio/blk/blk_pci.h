// The virtio-blk PCI device the machine adds to its PciBus: opens the image with libimg, builds
// the BlkDevice and wraps it in the virtio-pci transport.
//
// Thread-safety: make_virtio_blk_pci is a plain function; see VirtioPciDevice for the device.
#pragma once

#include <memory>
#include <string>

#include "devices/irq.h"
#include "img/status.h"
#include "kvm/guest_memory.h"
#include "pci/pci_device.h"

namespace vmm {

struct BlkConfig {
  std::string path;
  std::string format;  // "raw", "qcow2", or "" to probe
  bool read_only = false;
  std::string serial;  // GET_ID, at most 20 bytes used
  unsigned num_queues = 1;
  bool direct = false;  // O_DIRECT on the image file (qemu's cache=none)
  // Run the device's I/O loop without io_uring, as on a host that lacks it (for tests).
  bool force_sync_io = false;
};

namespace virtio {
class VirtioPciDevice;
namespace blk {
class BlkDevice;
}
}  // namespace virtio

// The PCI function and the BlkDevice inside it (for its size, format and counters); blk lives as
// long as pci.
struct BlkPci {
  std::shared_ptr<virtio::VirtioPciDevice> pci;
  const virtio::blk::BlkDevice* blk = nullptr;
};

// memory, irq and ioevents must outlive the device.
img::Result<BlkPci> make_virtio_blk_pci_device(const BlkConfig& config, const GuestMemory& memory,
                                               InterruptController& irq, IoEventRegistry& ioevents);
img::Result<std::shared_ptr<PciDevice>> make_virtio_blk_pci(const BlkConfig& config,
                                                            const GuestMemory& memory,
                                                            InterruptController& irq,
                                                            IoEventRegistry& ioevents);

}  // namespace vmm
