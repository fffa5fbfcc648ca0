// QEMU's guess that a qcow2 image was made with metadata preallocation (block/qcow2-refcount.c
// qcow2_detect_metadata_preallocation, used by qcow2_co_block_status): the file has clearly
// more clusters in use (non-zero refcount) than blocks allocated on the host. qemu-img map then
// asks the file system about every data run (BDRV_BLOCK_RECURSE), so preallocated clusters that
// were never written show as "zero": true. ChainMapper does the same, to print what qemu-img
// map prints.
//
// Thread-safety: pure over a read-only file descriptor.
#pragma once

namespace img {

// fd: the qcow2 file, open read-only. False when the header or refcount structure cannot be
// read (QEMU then reports no preallocation either).
bool qcow2_looks_metadata_preallocated(int fd);

}  // namespace img
