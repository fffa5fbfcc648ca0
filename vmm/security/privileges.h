// --user / --group: the VMM drops root once /dev/kvm, the taps, the images and the sockets are
// open, so a guest that subverts the process holds only what it already had open, as an
// unprivileged user (docs/vmm-security.md).
//
// Thread-safety: drop_privileges() before any other thread starts (setuid is per thread in the
// kernel; glibc signals every thread to follow, and the filters forbid those calls afterwards).
#pragma once

#include <sys/types.h>

#include <string>

#include "img/status.h"

namespace vmm::security {

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
};

// user: a name or a number; group: a name, a number, or "" for the user's primary group (a
// numeric user without a passwd entry then needs --group).
img::Result<Credentials> resolve_credentials(const std::string& user, const std::string& group);

// setgroups({gid}), setgid, setuid: in that order, since after setuid the process may no longer
// change its groups. Checks that root cannot be regained (setuid(0) must fail).
img::Status drop_privileges(const Credentials& c);

}  // namespace vmm::security
