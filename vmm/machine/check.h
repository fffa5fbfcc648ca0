// `vmm check`: can this host run guests? Each line is OK or FAIL with what to do about it, plus
// notes (e.g. KVM is the kvm_pvm software hypervisor, so guests run emulated).
//
// Thread-safety: pure function of the host state.
#pragma once

#include <string>
#include <vector>

namespace vmm {

struct CheckLine {
  enum class State { kOk, kFail, kNote } state;
  std::string what;
  std::string fix;  // for kFail: the remedy; for kNote: the detail
};

// True when /dev/kvm is the kvm_pvm software hypervisor (its module is loaded).
bool host_is_kvm_pvm();

std::vector<CheckLine> run_host_checks(const std::string& kvm_path = "/dev/kvm");
// Prints the lines; returns 0 if none failed, 1 otherwise.
int print_host_checks(const std::vector<CheckLine>& lines);

}  // namespace vmm
