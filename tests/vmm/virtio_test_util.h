// Test helpers for the PCI / virtio device models: guest RAM in an mmap'd buffer, fake
// InterruptController and IoEventRegistry on real eventfds, and a small guest-side driver that
// finds a device over port 0xCF8, sets up virtqueues the way Linux's virtio_pci does, and posts
// virtio-blk requests. No KVM involved.
//
// Thread-safety: test-thread only (the device's I/O thread sees only guest RAM and eventfds).
#pragma once

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "devices/irq.h"
#include "kvm/guest_memory.h"
#include "pci/pci_bus.h"
#include "virtio/virtio_spec.h"

namespace vmm::testing {

class GuestRam {
 public:
  // page_size: what the region tells discard() about its host pages (0: the base page). The
  // mapping is ordinary memory aligned to page_size, so a test can play huge pages without a
  // hugetlb pool.
  explicit GuestRam(uint64_t size, uint64_t page_size = 0) : size_(size) {
    map_size_ = size + page_size;
    map_ = static_cast<uint8_t*>(
        mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    host_ = map_;
    if (page_size) host_ += (page_size - reinterpret_cast<uintptr_t>(map_) % page_size) % page_size;
    mem_.add_region(0, size, host_, page_size);
  }
  ~GuestRam() { munmap(map_, map_size_); }
  GuestMemory& mem() { return mem_; }
  uint8_t* at(uint64_t gpa) { return host_ + gpa; }
  uint64_t size() const { return size_; }
  template <class T>
  void put(uint64_t gpa, T v) {
    std::memcpy(host_ + gpa, &v, sizeof v);
  }
  template <class T>
  T get(uint64_t gpa) {
    T v;
    std::memcpy(&v, host_ + gpa, sizeof v);
    return v;
  }

 private:
  uint64_t size_, map_size_;
  uint8_t *map_, *host_;
  GuestMemory mem_;
};

class FakeIrq : public InterruptController {
 public:
  ~FakeIrq() override {
    for (auto& [gsi, r] : routes) close(r.fd);
  }
  struct Route {
    int fd;
    uint64_t address;
    uint32_t data;
  };
  img::Result<Msi> add_msi(uint64_t address, uint32_t data) override {
    std::lock_guard l(mu);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint32_t gsi = next_gsi++;
    routes[gsi] = {fd, address, data};
    return Msi{gsi, fd};
  }
  img::Status update_msi(const Msi& msi, uint64_t address, uint32_t data) override {
    std::lock_guard l(mu);
    routes[msi.gsi].address = address;
    routes[msi.gsi].data = data;
    ++updates;
    return {};
  }
  void remove_msi(const Msi& msi) override {
    std::lock_guard l(mu);
    ++removed;
    (void)msi;
  }
  void set_irq_line(uint32_t, bool) override {}
  // Interrupts raised on the route whose MSI data is `data` since the last call.
  uint64_t take(uint32_t data) {
    std::lock_guard l(mu);
    for (auto& [gsi, r] : routes) {
      if (r.data != data) continue;
      uint64_t v = 0;
      if (read(r.fd, &v, 8) != 8) v = 0;
      return v;
    }
    return 0;
  }
  std::mutex mu;
  std::map<uint32_t, Route> routes;
  uint32_t next_gsi = 24;
  int updates = 0;
  int removed = 0;
};

class FakeIoEvents : public IoEventRegistry {
 public:
  img::Result<int> add_ioeventfd(uint64_t addr, uint32_t len, bool pio,
                                 std::optional<uint64_t>) override {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    std::lock_guard l(mu);
    fds[addr] = fd;
    (void)len;
    (void)pio;
    return fd;
  }
  void remove_ioeventfd(int fd) override {
    std::lock_guard l(mu);
    for (auto it = fds.begin(); it != fds.end(); ++it) {
      if (it->second == fd) {
        fds.erase(it);
        break;
      }
    }
    close(fd);
  }
  // What KVM does on a guest write to addr: signal the eventfd.
  bool kick(uint64_t addr) {
    std::lock_guard l(mu);
    auto it = fds.find(addr);
    if (it == fds.end()) return false;
    uint64_t one = 1;
    return write(it->second, &one, 8) == 8;
  }
  std::mutex mu;
  std::map<uint64_t, int> fds;
};

// The guest side: config mechanism #1 over the PciBus, MMIO over the Bus.
class PciDriver {
 public:
  PciDriver(PciBus& pci, Bus& mmio, unsigned slot) : pci_(pci), mmio_(mmio), slot_(slot) {}
  void select(uint32_t reg) {
    uint32_t a = 0x80000000u | slot_ << 11 | (reg & 0xfc);
    pci_.bus_write(0, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&a), 4));
  }
  uint32_t cfg_read(uint32_t reg, unsigned size = 4) {
    select(reg);
    uint32_t v = 0;
    pci_.bus_read(4 + (reg & 3), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
    return v;
  }
  void cfg_write(uint32_t reg, uint32_t v, unsigned size = 4) {
    select(reg);
    pci_.bus_write(4 + (reg & 3), std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
  }
  uint64_t bar0() { return (cfg_read(0x10) & ~0xfu) | uint64_t{cfg_read(0x14)} << 32; }
  uint64_t mmio_read(uint64_t addr, unsigned size) {
    uint64_t v = 0;
    if (!mmio_.read(addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), size))) return ~0ull;
    return v;
  }
  void mmio_write(uint64_t addr, uint64_t v, unsigned size) {
    (void)mmio_.write(addr, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), size));
  }
  // Walks the capability list: (offset, id) pairs.
  std::vector<std::pair<uint8_t, uint8_t>> caps() {
    std::vector<std::pair<uint8_t, uint8_t>> out;
    uint8_t p = static_cast<uint8_t>(cfg_read(0x34, 1));
    for (int guard = 0; p && guard < 48; ++guard) {
      out.push_back({p, static_cast<uint8_t>(cfg_read(p, 1))});
      p = static_cast<uint8_t>(cfg_read(p + 1, 1));
    }
    return out;
  }

 private:
  PciBus& pci_;
  Bus& mmio_;
  unsigned slot_;
};

// A guest virtio driver over PciDriver: the Linux virtio_pci bring-up sequence, split rings in
// guest RAM, and virtio-blk requests.
class VirtioGuest {
 public:
  static constexpr uint64_t kQueueBase = 0x100000;  // queue q at kQueueBase + q * 0x20000
  static constexpr uint64_t kReqBase = 0x800000;    // request slot i: header at +32*i, status +16
  static constexpr uint32_t kMsiAddr = 0xfee00000;
  static constexpr uint32_t kMsiData = 0x40;  // vector v raises data kMsiData + v

  VirtioGuest(GuestRam& ram, PciDriver& pci) : ram_(ram), pci_(pci) {}

  uint64_t bar() const { return bar_; }
  uint64_t common(uint32_t off, unsigned size) { return pci_.mmio_read(bar_ + off, size); }
  void set_common(uint32_t off, uint64_t v, unsigned size) { pci_.mmio_write(bar_ + off, v, size); }
  uint8_t status() { return static_cast<uint8_t>(common(virtio::common::kDeviceStatus, 1)); }
  uint64_t device_features() {
    set_common(virtio::common::kDeviceFeatureSelect, 0, 4);
    uint64_t lo = common(virtio::common::kDeviceFeature, 4);
    set_common(virtio::common::kDeviceFeatureSelect, 1, 4);
    return lo | common(virtio::common::kDeviceFeature, 4) << 32;
  }
  void set_driver_features(uint64_t f) {
    set_common(virtio::common::kDriverFeatureSelect, 0, 4);
    set_common(virtio::common::kDriverFeature, static_cast<uint32_t>(f), 4);
    set_common(virtio::common::kDriverFeatureSelect, 1, 4);
    set_common(virtio::common::kDriverFeature, f >> 32, 4);
  }

  // Memory decode on, MSI-X programmed and enabled, then reset, ACK, DRIVER, features
  // (device's & mask), FEATURES_OK, queues, DRIVER_OK. Returns the final status.
  uint8_t init(unsigned num_queues, uint16_t qsize, uint64_t mask = ~0ull) {
    pci_.cfg_write(0x04, 0x6, 2);  // memory space + bus master
    bar_ = pci_.bar0();
    nq_ = num_queues;
    qsize_ = qsize;
    // MSI-X: find the capability, program num_queues + 1 vectors, enable.
    for (auto [off, id] : pci_.caps()) {
      if (id != 0x11) continue;
      uint32_t table = pci_.cfg_read(off + 4);
      uint16_t n = static_cast<uint16_t>((pci_.cfg_read(off + 2, 2) & 0x7ff) + 1);
      for (uint16_t v = 0; v < n; ++v) {
        uint64_t e = bar_ + (table & ~7u) + v * 16u;
        pci_.mmio_write(e, kMsiAddr, 4);
        pci_.mmio_write(e + 4, 0, 4);
        pci_.mmio_write(e + 8, kMsiData + v, 4);
        pci_.mmio_write(e + 12, 0, 4);  // unmask
      }
      pci_.cfg_write(off + 2, 0x8000 | (n - 1), 2);
    }
    set_common(virtio::common::kDeviceStatus, 0, 1);
    set_common(virtio::common::kDeviceStatus, 1, 1);
    set_common(virtio::common::kDeviceStatus, 3, 1);
    features_ = device_features() & mask;
    set_driver_features(features_);
    set_common(virtio::common::kDeviceStatus, 0xb, 1);
    if (!(status() & 8)) return status();
    set_common(virtio::common::kConfigMsixVector, num_queues, 2);
    for (unsigned q = 0; q < num_queues; ++q) {
      set_common(virtio::common::kQueueSelect, q, 2);
      set_common(virtio::common::kQueueSize, qsize, 2);
      set_common(virtio::common::kQueueMsixVector, q, 2);
      uint64_t base = kQueueBase + q * 0x20000ull;
      std::memset(ram_.at(base), 0, 0x20000);
      set_common(virtio::common::kQueueDesc, base, 4);
      set_common(virtio::common::kQueueDesc + 4, base >> 32, 4);
      set_common(virtio::common::kQueueDriver, base + 0x8000, 8);
      set_common(virtio::common::kQueueDevice, base + 0x10000, 8);
      set_common(virtio::common::kQueueEnable, 1, 2);
      notify_off_[q] = static_cast<uint16_t>(common(virtio::common::kQueueNotifyOff, 2));
    }
    next_desc_.assign(num_queues, 0);
    avail_idx_.assign(num_queues, 0);
    set_common(virtio::common::kDeviceStatus, 0xf, 1);
    return status();
  }

  uint64_t desc_gpa(unsigned q, uint16_t i) { return kQueueBase + q * 0x20000ull + i * 16ull; }
  uint64_t avail_gpa(unsigned q) { return kQueueBase + q * 0x20000ull + 0x8000; }
  uint64_t used_gpa(unsigned q) { return kQueueBase + q * 0x20000ull + 0x10000; }

  void write_desc(unsigned q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                  uint16_t next) {
    uint64_t d = desc_gpa(q, i);
    ram_.put<uint64_t>(d, addr);
    ram_.put<uint32_t>(d + 8, len);
    ram_.put<uint16_t>(d + 12, flags);
    ram_.put<uint16_t>(d + 14, next);
  }
  struct Buf {
    uint64_t addr;
    uint32_t len;
    bool writable;
  };
  // Writes a chain in consecutive descriptor slots; returns its head (not yet made available).
  uint16_t write_chain(unsigned q, const std::vector<Buf>& bufs) {
    uint16_t head = next_desc_[q];
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint16_t idx = static_cast<uint16_t>((head + i) % qsize_);
      uint16_t flags = (bufs[i].writable ? virtio::kDescFWrite : 0) |
                       (i + 1 < bufs.size() ? virtio::kDescFNext : 0);
      write_desc(q, idx, bufs[i].addr, bufs[i].len, flags,
                 static_cast<uint16_t>((idx + 1) % qsize_));
    }
    next_desc_[q] = static_cast<uint16_t>((head + bufs.size()) % qsize_);
    return head;
  }
  // Makes head available (without notifying).
  void make_available(unsigned q, uint16_t head) {
    ram_.put<uint16_t>(avail_gpa(q) + 4 + 2 * (avail_idx_[q] % qsize_), head);
    ++avail_idx_[q];
    __atomic_store_n(reinterpret_cast<uint16_t*>(ram_.at(avail_gpa(q) + 2)), avail_idx_[q],
                     __ATOMIC_RELEASE);
  }
  void notify(unsigned q) { pci_.mmio_write(bar_ + 0x3000 + notify_off_[q] * 4ull, q, 2); }
  uint16_t used_idx(unsigned q) {
    return __atomic_load_n(reinterpret_cast<uint16_t*>(ram_.at(used_gpa(q) + 2)), __ATOMIC_ACQUIRE);
  }
  std::pair<uint32_t, uint32_t> used_elem(unsigned q, uint16_t i) {
    uint64_t e = used_gpa(q) + 4 + 8ull * (i % qsize_);
    return {ram_.get<uint32_t>(e), ram_.get<uint32_t>(e + 4)};
  }
  uint16_t avail_idx(unsigned q) const { return avail_idx_[q]; }

  // virtio-blk: header and status in request slot `slot`; data buffers given.
  uint16_t blk_chain(unsigned q, unsigned slot, uint32_t type, uint64_t sector,
                     const std::vector<Buf>& data) {
    uint64_t h = kReqBase + slot * 32ull;
    ram_.put<uint32_t>(h, type);
    ram_.put<uint32_t>(h + 4, 0);
    ram_.put<uint64_t>(h + 8, sector);
    ram_.put<uint8_t>(h + 16, 0xee);
    std::vector<Buf> bufs{{h, 16, false}};
    bufs.insert(bufs.end(), data.begin(), data.end());
    bufs.push_back({h + 16, 1, true});
    return write_chain(q, bufs);
  }
  uint8_t blk_status(unsigned slot) { return ram_.get<uint8_t>(kReqBase + slot * 32ull + 16); }

  uint64_t features() const { return features_; }

 private:
  GuestRam& ram_;
  PciDriver& pci_;
  uint64_t bar_ = 0;
  unsigned nq_ = 0;
  uint16_t qsize_ = 0;
  uint64_t features_ = 0;
  uint16_t notify_off_[64] = {};
  std::vector<uint16_t> next_desc_;
  std::vector<uint16_t> avail_idx_;
};

// Waits up to 5 s for pred.
template <class F>
bool wait_for(F pred) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return pred();
}

}  // namespace vmm::testing
