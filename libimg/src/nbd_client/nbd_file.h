// An NBD export as a File, on libnbd (the NBD maintainers' client library: handshake, structured
// replies, block status and the protocol's corner cases are theirs, kept up with the spec and
// tested against qemu-nbd and nbdkit; we only drive it). Its non-blocking API runs on the
// IoLoop: requests are issued with nbd_aio_*, and the loop polls the socket for the direction
// nbd_aio_get_direction asks, so many requests are in flight on one thread, as with host files.
//
// Thread-safety: the File belongs to its IoLoop's thread.
#pragma once

#include <memory>
#include <string>

#include "img/file.h"

namespace img::nbd_client {

// Connects to the export path names (see nbd_uri.h) and negotiates base:allocation. The size is
// the server's; a read-only export refuses a read-write open. A server that does not finish the
// handshake within a few seconds is an error, not a hang.
Result<std::unique_ptr<File>> open_nbd_file(IoLoop& loop, const std::string& path,
                                            FileOpenOptions opts);

}  // namespace img::nbd_client
