#include "kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "kvm/kvm_abi.h"

namespace vmm {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

const std::vector<KvmCap>& required_caps() {
  static const std::vector<KvmCap> caps = {
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
      {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
  };
  return caps;
}

img::Result<Kvm> Kvm::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) {
      return img::make_error(img::ErrorCode::kNotFound,
                             path + " does not exist: load the kvm modules (kvm_intel or kvm_amd) "
                                    "and enable virtualization in the firmware; run `vmm check`",
                             e);
    }
    if (e == EACCES || e == EPERM) {
      return img::make_error(img::ErrorCode::kPermission,
                             path + ": permission denied: add this user to the kvm group "
                                    "(usermod -aG kvm $USER) or run as root",
                             e);
    }
    return img::io_error(e, "opening " + path);
  }
  Kvm kvm{Fd(fd)};
  int v = kvm.api_version();
  if (v != kApiVersion) {
    return img::not_supported(img::strfmt("%s: KVM API version %d, this VMM needs %d", path.c_str(),
                                          v, kApiVersion));
  }
  return kvm;
}

int Kvm::api_version() const { return ::ioctl(fd(), KVM_GET_API_VERSION, 0); }

int Kvm::check_extension(int cap) const { return ::ioctl(fd(), KVM_CHECK_EXTENSION, cap); }

img::Status Kvm::check_required_caps() const {
  for (const KvmCap& c : required_caps()) {
    if (check_extension(c.cap) <= 0) {
      return img::not_supported(std::string("KVM lacks ") + c.name +
                                ": this host kernel's KVM is too old or limited");
    }
  }
  return {};
}

img::Result<std::vector<kvm_cpuid_entry2>> Kvm::supported_cpuid() const {
  // KVM_GET_SUPPORTED_CPUID fails with E2BIG while the buffer is too small.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint64_t> buf = kvm_abi::pack(std::vector<kvm_cpuid_entry2>(n), n);
    if (::ioctl(fd(), kvm_abi::kGetSupportedCpuid, buf.data()) == 0) {
      return kvm_abi::unpack<kvm_cpuid_entry2>(buf);
    }
    if (errno != E2BIG) return img::io_error(errno, "KVM_GET_SUPPORTED_CPUID");
  }
  return img::not_supported("KVM_GET_SUPPORTED_CPUID: too many entries");
}

img::Result<std::vector<uint32_t>> Kvm::msr_index_list() const {
  // E2BIG while the buffer is too small, with nmsrs set to the count needed.
  uint32_t n = 64;
  for (int tries = 0; tries < 4; ++tries) {
    std::vector<uint32_t> buf(1 + n);
    buf[0] = n;
    if (::ioctl(fd(), kvm_abi::kGetMsrIndexList, buf.data()) == 0) {
      return std::vector<uint32_t>(buf.begin() + 1, buf.begin() + 1 + std::min(buf[0], n));
    }
    if (errno != E2BIG || buf[0] <= n || buf[0] > 16384) {
      return img::io_error(errno, "KVM_GET_MSR_INDEX_LIST");
    }
    n = buf[0];
  }
  return img::not_supported("KVM_GET_MSR_INDEX_LIST: the list keeps growing");
}

img::Result<size_t> Kvm::vcpu_mmap_size() const {
  int n = ::ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (n <= 0) return img::io_error(errno, "KVM_GET_VCPU_MMAP_SIZE");
  return static_cast<size_t>(n);
}

img::Status Vm::save_chip_reset_state() {
  chips_.clear();
  for (uint32_t id : {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC}) {
    kvm_irqchip chip{};
    chip.chip_id = id;
    if (::ioctl(fd(), KVM_GET_IRQCHIP, &chip) < 0) {
      return img::io_error(errno, img::strfmt("KVM_GET_IRQCHIP %u", id));
    }
    chips_.push_back(chip);
  }
  if (has_pit_ && ::ioctl(fd(), KVM_GET_PIT2, &pit_) < 0)
    return img::io_error(errno, "KVM_GET_PIT2");
  return {};
}

img::Status Vm::restore_chip_reset_state() {
  for (kvm_irqchip& chip : chips_) {
    if (::ioctl(fd(), KVM_SET_IRQCHIP, &chip) < 0) {
      return img::io_error(errno, img::strfmt("KVM_SET_IRQCHIP %u", chip.chip_id));
    }
  }
  if (has_pit_ && ::ioctl(fd(), KVM_SET_PIT2, &pit_) < 0)
    return img::io_error(errno, "KVM_SET_PIT2");
  return {};
}

img::Result<Vm> Vm::create(const Kvm& kvm) {
  int fd;
  do {
    fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return img::io_error(errno, "KVM_CREATE_VM");
  Vm vm{Fd(fd)};
  if (kvm.check_extension(KVM_CAP_SET_TSS_ADDR) > 0 &&
      ::ioctl(fd, KVM_SET_TSS_ADDR, static_cast<unsigned long>(kTssAddr)) < 0) {
    return img::io_error(errno, "KVM_SET_TSS_ADDR");
  }
  if (kvm.check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
    uint64_t addr = kIdentityMapAddr;
    if (::ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0) {
      return img::io_error(errno, "KVM_SET_IDENTITY_MAP_ADDR");
    }
  }
  if (::ioctl(fd, KVM_CREATE_IRQCHIP, 0) < 0) return img::io_error(errno, "KVM_CREATE_IRQCHIP");
  if (kvm.check_extension(KVM_CAP_PIT2) > 0) {
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;  // port 0x61 answered in the kernel, no speaker
    if (::ioctl(fd, KVM_CREATE_PIT2, &pit) < 0) return img::io_error(errno, "KVM_CREATE_PIT2");
    vm.has_pit_ = true;
  }
  return vm;
}

img::Status Vm::add_memory(uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region r{};
  r.slot = next_slot_;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r) < 0) {
    return img::io_error(errno, img::strfmt("KVM_SET_USER_MEMORY_REGION slot %u", r.slot));
  }
  ++next_slot_;
  return {};
}

uint32_t Vm::tsc_khz() const {
  int r = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  return r > 0 ? static_cast<uint32_t>(r) : 0;
}

}  // namespace vmm
