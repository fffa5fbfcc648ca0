// Disk wiring: the PCI host bridge and one virtio-blk-pci function per --disk. Built only when
// the PCI bus and virtio-blk are in the tree; otherwise --disk is refused with a clear error.
#include "machine/machine.h"

#if __has_include("pci/pci_bus.h") && __has_include("virtio/blk/blk_pci.h")
#define VMM_HAVE_VIRTIO_BLK 1
#include "pci/pci_bus.h"
#include "virtio/blk/blk_pci.h"
#endif

namespace vmm {

img::Status Machine::setup_disks(const MachineConfig& c) {
#ifdef VMM_HAVE_VIRTIO_BLK
  auto pci = std::make_shared<PciBus>(mmio_, kPciHoleStart, kPciHoleEnd);
  RETURN_IF_ERROR(pio_.insert(0xcf8, 8, pci));
  devices_.push_back(pci);
  for (size_t i = 0; i < c.disks.size(); ++i) {
    const DiskSpec& d = c.disks[i];
    BlkConfig bc;
    bc.path = d.path;
    bc.format = d.format;
    bc.read_only = d.read_only;
    bc.direct = d.direct;
    bc.serial = img::strfmt("vmm-disk%zu", i);
    auto dev = make_virtio_blk_pci(bc, ram_.memory(), *irq_, *ioevents_);
    if (!dev) return img::Unexpected(dev.error().prepend("--disk " + d.path));
    RETURN_IF_ERROR(pci->add_device(*dev));
  }
  return {};
#else
  if (!c.disks.empty()) return img::not_supported("--disk: this build has no virtio-blk device yet");
  return {};
#endif
}

}  // namespace vmm
