// KVM ioctls whose argument ends in a flexible array. The uapi headers declare those arrays with
// __DECLARE_FLEX_ARRAY, an anonymous struct holding an empty struct, which in C++ has size 1:
// sizeof(kvm_cpuid2) is 12 instead of 8, the array moves to offset 12, and the ioctl numbers
// (which encode the size) no longer match the kernel's. So the numbers and the layout
// ({u32 count; u32 pad; entries[] at offset 8}) are spelled out here, as C sees them.
//
// Thread-safety: constants and pure helpers.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace vmm::kvm_abi {

inline constexpr size_t kHeaderSize = 8;  // u32 count + u32 padding/flags
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, uint64_t);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, uint64_t);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, uint64_t);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, uint64_t);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, uint64_t);
// struct kvm_msr_list is {u32 nmsrs; u32 indices[]}: the array at offset 4, the size 4.
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, uint32_t);
// struct kvm_xsave is the 4096-byte legacy area followed by a flexible array.
struct Xsave {
  uint32_t region[1024];
};
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);

// A buffer holding {count, 0, entries...}; 8-byte aligned.
template <class T>
std::vector<uint64_t> pack(const std::vector<T>& entries, uint32_t count_field) {
  std::vector<uint64_t> buf((kHeaderSize + entries.size() * sizeof(T) + 7) / 8);
  auto* b = reinterpret_cast<uint8_t*>(buf.data());
  std::memcpy(b, &count_field, 4);
  if (!entries.empty()) std::memcpy(b + kHeaderSize, entries.data(), entries.size() * sizeof(T));
  return buf;
}

template <class T>
std::vector<T> unpack(const std::vector<uint64_t>& buf) {
  const auto* b = reinterpret_cast<const uint8_t*>(buf.data());
  uint32_t n;
  std::memcpy(&n, b, 4);
  std::vector<T> out(n);
  if (n) std::memcpy(out.data(), b + kHeaderSize, n * sizeof(T));
  return out;
}

}  // namespace vmm::kvm_abi
