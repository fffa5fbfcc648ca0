#include "machine/check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "img/io_loop.h"
#include "kvm/kvm.h"
#include "machine/guest_cmdline.h"

namespace vmm {
namespace {

bool exists(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool module_loaded(const std::string& name) {
  if (exists("/sys/module/" + name)) return true;
  return slurp("/proc/modules").find(name + " ") != std::string::npos;
}

}  // namespace

bool host_is_kvm_pvm() { return module_loaded("kvm_pvm"); }

std::vector<CheckLine> run_host_checks(const std::string& kvm_path) {
  using S = CheckLine::State;
  std::vector<CheckLine> out;
  bool pvm = host_is_kvm_pvm();
  std::string cpuinfo = slurp("/proc/cpuinfo");
  bool vmx = cpuinfo.find(" vmx") != std::string::npos, svm = cpuinfo.find(" svm") != std::string::npos;
  if (vmx || svm) {
    out.push_back({S::kOk, std::string("CPU virtualization flag (") + (vmx ? "vmx" : "svm") + ")", ""});
  } else if (pvm) {
    out.push_back({S::kOk, "CPU virtualization flag: none, but kvm_pvm needs none", ""});
  } else {
    out.push_back({S::kFail, "CPU virtualization flag (vmx/svm) in /proc/cpuinfo",
                   "enable VT-x/AMD-V in the firmware, or nested virtualization on the host VM"});
  }
  bool mod = module_loaded("kvm_intel") || module_loaded("kvm_amd") || pvm;
  if (module_loaded("kvm") && mod) {
    out.push_back({S::kOk, "kvm modules loaded", ""});
  } else {
    out.push_back({S::kFail, "kvm modules loaded", "modprobe kvm_intel (or kvm_amd)"});
  }
  if (pvm) {
    out.push_back({S::kNote, "KVM is kvm_pvm, a software hypervisor",
                   "guest CPL0 code runs in an instruction emulator (~2 M instructions/s): "
                   "stock Linux kernels are very slow or stop; use hardware KVM for real guests"});
    out.push_back({S::kNote, "kvm_pvm workarounds",
                   "vmm run adds '" + pvm_workaround_params() +
                       "' to a Linux guest's command line (--no-pvm-workarounds turns this off)"});
  }
  if (!exists(kvm_path)) {
    out.push_back({S::kFail, kvm_path + " present", "load the kvm modules; check udev created the node"});
    return out;
  }
  out.push_back({S::kOk, kvm_path + " present", ""});
  if (::access(kvm_path.c_str(), R_OK | W_OK) != 0) {
    out.push_back({S::kFail, kvm_path + " read/write for this user",
                   "usermod -aG kvm $USER (then log in again), or run as root"});
    return out;
  }
  out.push_back({S::kOk, kvm_path + " read/write for this user", ""});
  auto kvm = Kvm::open(kvm_path);
  if (!kvm) {
    out.push_back({S::kFail, "KVM API version 12", kvm.error().message()});
    return out;
  }
  out.push_back({S::kOk, "KVM API version 12", ""});
  for (const KvmCap& c : required_caps()) {
    if (kvm->check_extension(c.cap) > 0) {
      out.push_back({S::kOk, std::string("capability ") + c.name, ""});
    } else {
      out.push_back({S::kFail, std::string("capability ") + c.name, "use a newer host kernel"});
    }
  }
  if (kvm->check_extension(KVM_CAP_PIT2) > 0) {
    out.push_back({S::kOk, "capability KVM_CAP_PIT2", ""});
  } else {
    out.push_back({S::kNote, "capability KVM_CAP_PIT2 missing", "guests run without a PIT"});
  }
  img::IoLoop::Options opts;
  opts.allow_sync_fallback = false;
  auto loop = img::IoLoop::create(opts);
  if (loop && (*loop)->has_uring()) {
    out.push_back({S::kOk, "io_uring available", ""});
  } else {
    out.push_back({S::kFail, "io_uring available",
                   (loop ? (*loop)->uring_error() : loop.error().message()) +
                       ": allow io_uring (sysctl kernel.io_uring_disabled=0, seccomp/container policy)"});
  }
  return out;
}

int print_host_checks(const std::vector<CheckLine>& lines) {
  int rc = 0;
  for (const CheckLine& l : lines) {
    switch (l.state) {
      case CheckLine::State::kOk:
        std::printf("OK    %s\n", l.what.c_str());
        break;
      case CheckLine::State::kFail:
        std::printf("FAIL  %s: %s\n", l.what.c_str(), l.fix.c_str());
        rc = 1;
        break;
      case CheckLine::State::kNote:
        std::printf("NOTE  %s: %s\n", l.what.c_str(), l.fix.c_str());
        break;
    }
  }
  return rc;
}

}  // namespace vmm
