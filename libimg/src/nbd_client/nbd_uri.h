// NBD URIs as QEMU's nbd block driver takes them (block/nbd.c nbd_parse_uri, nbd_parse_filename):
//   nbd://HOST[:PORT]/EXPORT            TCP, port 10809 by default
//   nbd+unix:///EXPORT?socket=PATH      a Unix socket
//   nbd:HOST:PORT[:exportname=X]        the legacy forms
//   nbd:unix:PATH[:exportname=X]
// The URI forms follow the NBD URI specification (NetworkBlockDevice/nbd doc/uri.md), which
// libnbd's nbd_connect_uri implements; the legacy forms are rewritten into it.
#pragma once

#include <string>

#include "img/status.h"

namespace img::nbd_client {

struct NbdTarget {
  std::string uri;      // for libnbd's nbd_aio_connect_uri
  std::string display;  // the name qemu-img prints for the image
  std::string address;  // what a failed connect names, as qemu does: the socket path, HOST:PORT
};

// Whether path names an NBD export rather than a host file (qemu takes every "nbd:" name as one).
bool is_nbd_name(const std::string& path);

// REQUIRES: is_nbd_name(path). A malformed legacy name is kInvalidArgument; the URI forms are
// checked by libnbd when it connects.
Result<NbdTarget> parse_nbd_name(const std::string& path);

}  // namespace img::nbd_client
