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
  ASSIGN_OR_RETURN(std::string text, read_locked(*lock, path));
  ASSIGN_OR_RETURN(Definition def, parse_definition(text, path));
  if (def.name != name) {
    return img::invalid_argument(path + ": its name is '" + def.name + "', not '" + name + "'");
  }
  return OpenVm{std::move(def), std::move(*lock)};
}

}  // namespace vmm::lifecycle
