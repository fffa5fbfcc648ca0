// A test rig: guest RAM, fake interrupt/ioeventfd plumbing, a PCI bus with one virtio-blk
// device over a raw temp file, and a guest driver for it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "virtio/blk/blk_pci.h"
#include "virtio/virtio_pci.h"
#include "virtio_test_util.h"

namespace vmm::testing {

inline std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("IMG_TEST_TMPDIR");
  std::string d = dir ? dir : "/tmp";
  std::string mk = "mkdir -p " + d;
  (void)std::system(mk.c_str());
  return d + "/" + name + "." + std::to_string(getpid());
}

inline uint8_t pattern(uint64_t off) { return static_cast<uint8_t>((off >> 9) * 13 + off * 7 + 1); }

// A raw image of size bytes filled with pattern().
inline std::string make_raw(const std::string& name, uint64_t size) {
  std::string p = temp_path(name);
  int fd = open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  std::vector<uint8_t> buf(size);
  for (uint64_t i = 0; i < size; ++i) buf[i] = pattern(i);
  (void)!write(fd, buf.data(), buf.size());
  close(fd);
  return p;
}

inline std::vector<uint8_t> file_bytes(const std::string& path, uint64_t off, uint64_t len) {
  std::vector<uint8_t> out(len);
  int fd = open(path.c_str(), O_RDONLY);
  (void)!pread(fd, out.data(), len, off);
  close(fd);
  return out;
}

struct Rig {
  explicit Rig(BlkConfig cfg, uint64_t ram_size = 64 << 20) : ram(ram_size) {
    config = cfg;
    auto d = make_virtio_blk_pci(cfg, ram.mem(), irq, io);
    if (!d) {
      error = d.error().to_string();
      return;
    }
    dev = *d;
    auto s = pci.add_device(dev);
    if (!s) error = s.error().to_string();
  }
  bool ok() const { return dev && error.empty(); }

  GuestRam ram;
  FakeIrq irq;
  FakeIoEvents io;
  Bus mmio;
  PciBus pci{mmio, 0xc0000000, 0xfec00000};
  BlkConfig config;
  std::shared_ptr<PciDevice> dev;
  std::string error;
  PciDriver drv{pci, mmio, 1};
  VirtioGuest guest{ram, drv};
};

// The same rig around any VirtioDevice (rng, console, ...) in PCI slot 1.
struct DeviceRig {
  explicit DeviceRig(img::Result<std::unique_ptr<virtio::VirtioDevice>> d,
                     uint64_t ram_size = 64 << 20, uint64_t host_page_size = 0)
      : ram(ram_size, host_page_size) {
    if (!d) {
      error = d.error().to_string();
      return;
    }
    auto p = virtio::VirtioPciDevice::create(std::move(*d), ram.mem(), irq, io);
    if (!p) {
      error = p.error().to_string();
      return;
    }
    dev = *p;
    auto s = pci.add_device(dev);
    if (!s) error = s.error().to_string();
  }
  bool ok() const { return dev && error.empty(); }
  virtio::VirtioPciDevice& virtio() { return *dev; }
  void reset() { guest.set_common(virtio::common::kDeviceStatus, 0, 1); }

  GuestRam ram;
  FakeIrq irq;
  FakeIoEvents io;
  Bus mmio;
  PciBus pci{mmio, 0xc0000000, 0xfec00000};
  std::shared_ptr<virtio::VirtioPciDevice> dev;
  std::string error;
  PciDriver drv{pci, mmio, 1};
  VirtioGuest guest{ram, drv};
};

// Upcasts a device factory's result for DeviceRig.
template <class T>
img::Result<std::unique_ptr<virtio::VirtioDevice>> as_device(img::Result<std::unique_ptr<T>> r) {
  if (!r) return img::Unexpected(std::move(r.error()));
  return std::unique_ptr<virtio::VirtioDevice>(std::move(*r));
}

}  // namespace vmm::testing
