#include "virtio/blk/blk_pci.h"

#include "img/image.h"
#include "virtio/blk/blk_device.h"
#include "virtio/virtio_pci.h"

namespace vmm {

img::Result<BlkPci> make_virtio_blk_pci_device(const BlkConfig& config, const GuestMemory& memory,
                                               InterruptController& irq,
                                               IoEventRegistry& ioevents) {
  img::IoLoop::Options lo;
  lo.force_sync_fallback = config.force_sync_io;
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(lo));
  img::OpenOptions opts;
  opts.format = config.format;
  opts.read_only = config.read_only;
  opts.direct = config.direct;
  auto disk = loop->run(img::open_image(*loop, config.path, opts));
  if (!disk) return img::Unexpected(std::move(disk.error().prepend("virtio-blk " + config.path)));
  virtio::blk::BlkOptions bo;
  bo.serial = config.serial;
  bo.num_queues = config.num_queues;
  bo.read_only = config.read_only;
  ASSIGN_OR_RETURN(auto dev, virtio::blk::BlkDevice::create(std::move(loop), std::move(*disk), bo));
  const virtio::blk::BlkDevice* blk = dev.get();
  ASSIGN_OR_RETURN(auto pci,
                   virtio::VirtioPciDevice::create(std::move(dev), memory, irq, ioevents));
  return BlkPci{std::move(pci), blk};
}

img::Result<std::shared_ptr<PciDevice>> make_virtio_blk_pci(const BlkConfig& config,
                                                            const GuestMemory& memory,
                                                            InterruptController& irq,
                                                            IoEventRegistry& ioevents) {
  ASSIGN_OR_RETURN(BlkPci d, make_virtio_blk_pci_device(config, memory, irq, ioevents));
  return std::shared_ptr<PciDevice>(std::move(d.pci));
}

}  // namespace vmm
