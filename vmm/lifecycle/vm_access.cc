#include "lifecycle/vm_access.h"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace vmm::lifecycle {

img::Result<OpenVm> open_vm(const StateDir& sd, const std::string& name, int lock_op) {
  RETURN_IF_ERROR(check_name(name));
  std::string path = sd.definition(name);
  auto lock = FileLock::acquire(path, lock_op, false);
  if (!lock) {
    if (lock.error().sys_errno() == ENOENT) {
      return img::make_error(img::ErrorCode::kNotFound, "no VM named '" + name + "' in " + sd.root);
    }
    return img::Unexpected(lock.error());
  }
  // Read through the locked fd: the file we locked is the file we parse.
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::pread(lock->fd(), buf, sizeof buf, static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return img::io_error(errno, "reading " + path);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (16u << 20)) return img::invalid_argument(path + " is larger than 16 MiB");
  }
  ASSIGN_OR_RETURN(Definition def, parse_definition(text, path));
  if (def.name != name) {
    return img::invalid_argument(path + ": its name is '" + def.name + "', not '" + name + "'");
  }
  return OpenVm{std::move(def), std::move(*lock)};
}

}  // namespace vmm::lifecycle
