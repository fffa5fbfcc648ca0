// Growing a disk image under a running guest, as virtio-blk and virtio-scsi both do it
// (BlkDevice::resize, ScsiDevice::resize): the checks, and the grow-then-flush that runs on the
// disk's I/O loop, so the new size is durable before the guest is told.
//
// Thread-safety: free functions; grow_and_flush runs on the disk's loop.
#pragma once

#include <cstdint>

#include "img/block_driver.h"
#include "img/status.h"

namespace vmm::virtio {

// A multiple of 512 bytes, never smaller than old_size (a shrink would cut off the guest's data),
// and a writable disk; `what` names it in the read-only error ("the disk", "the LUN").
img::Status check_disk_grow(uint64_t old_size, uint64_t new_size, bool read_only, const char* what);
img::Task<img::Status> grow_and_flush(img::BlockDriver& disk, uint64_t new_size);

}  // namespace vmm::virtio
