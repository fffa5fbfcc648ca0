// PCI bus, config mechanism #1, BARs, capabilities, MSI-X and the virtio-pci common
// configuration state machine, driven the way a guest would.
#include <gtest/gtest.h>

#include <set>

#include "virtio/virtio_pci.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

class PciVirtio : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = make_raw("pci_virtio", 1 << 20);
    rig_ = std::make_unique<Rig>(BlkConfig{.path = path_, .format = "raw", .serial = "sn"});
    ASSERT_TRUE(rig_->ok()) << rig_->error;
  }
  void TearDown() override {
    rig_.reset();
    unlink(path_.c_str());
  }
  std::string path_;
  std::unique_ptr<Rig> rig_;
};

TEST_F(PciVirtio, ConfigMechanismOneFindsHostBridgeAndDevice) {
  PciDriver host(rig_->pci, rig_->mmio, 0);
  EXPECT_EQ(host.cfg_read(0), 0x0d578086u);
  EXPECT_EQ(host.cfg_read(0x0b, 1), 0x06u);  // bridge class
  PciDriver& d = rig_->drv;
  EXPECT_EQ(d.cfg_read(0), 0x10421af4u);
  EXPECT_EQ(d.cfg_read(2, 2), 0x1042u);  // word at 0xCFE
  EXPECT_EQ(d.cfg_read(3, 1), 0x10u);    // byte at 0xCFF
  EXPECT_EQ(d.cfg_read(0x08, 1), 1u);    // revision: modern
  EXPECT_EQ(d.cfg_read(0x2c), 0x00401af4u);
  PciDriver empty(rig_->pci, rig_->mmio, 7);
  EXPECT_EQ(empty.cfg_read(0), 0xffffffffu);
  // CONFIG_ADDRESS reads back.
  d.select(0x10);
  uint32_t a = 0;
  rig_->pci.bus_read(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&a), 4));
  EXPECT_EQ(a, 0x80000810u);
  // Read-only registers ignore writes.
  d.cfg_write(0, 0x12345678);
  EXPECT_EQ(d.cfg_read(0), 0x10421af4u);
}

TEST_F(PciVirtio, BarSizingAndPlacement) {
  PciDriver& d = rig_->drv;
  uint32_t lo = d.cfg_read(0x10), hi = d.cfg_read(0x14);
  uint64_t addr = (lo & ~0xfu) | uint64_t{hi} << 32;
  EXPECT_GE(addr, 0xc0000000u);
  EXPECT_LT(addr + virtio::VirtioPciDevice::kBarSize, 0xfec00000u);
  EXPECT_EQ(addr % virtio::VirtioPciDevice::kBarSize, 0u);
  EXPECT_EQ(lo & 0xf, 0x4u);  // 64-bit memory BAR
  d.cfg_write(0x10, 0xffffffff);
  d.cfg_write(0x14, 0xffffffff);
  EXPECT_EQ(d.cfg_read(0x10),
            static_cast<uint32_t>(~(virtio::VirtioPciDevice::kBarSize - 1)) | 0x4);
  EXPECT_EQ(d.cfg_read(0x14), 0xffffffffu);
  d.cfg_write(0x10, lo);
  d.cfg_write(0x14, hi);
  EXPECT_EQ(d.bar0(), addr);
  // Unused BARs size to 0.
  d.cfg_write(0x18, 0xffffffff);
  EXPECT_EQ(d.cfg_read(0x18), 0u);
}

TEST_F(PciVirtio, MemoryDecodeGatesTheBarAndBarsMove) {
  PciDriver& d = rig_->drv;
  uint64_t bar = d.bar0();
  uint8_t b;
  EXPECT_FALSE(rig_->mmio.read(bar + 0x12, std::span<uint8_t>(&b, 1)));  // decode off: unmapped
  d.cfg_write(0x04, 0x2, 2);
  EXPECT_EQ(d.mmio_read(bar + virtio::common::kNumQueues, 2), 1u);
  // Move the BAR while decode is on: the old range goes away, the notify ioeventfd follows.
  uint64_t moved = 0xd0000000;
  d.cfg_write(0x10, static_cast<uint32_t>(moved));
  EXPECT_FALSE(rig_->mmio.read(bar + 0x12, std::span<uint8_t>(&b, 1)));
  EXPECT_EQ(d.mmio_read(moved + virtio::common::kNumQueues, 2), 1u);
  EXPECT_TRUE(rig_->io.fds.count(moved + virtio::VirtioPciDevice::kNotifyOffset));
  EXPECT_FALSE(rig_->io.fds.count(bar + virtio::VirtioPciDevice::kNotifyOffset));
  d.cfg_write(0x04, 0x0, 2);
  EXPECT_FALSE(rig_->mmio.read(moved + 0x12, std::span<uint8_t>(&b, 1)));
}

TEST_F(PciVirtio, CapabilityListHasFourVirtioCapsAndMsix) {
  PciDriver& d = rig_->drv;
  EXPECT_TRUE(d.cfg_read(0x06, 2) & 0x10);  // capabilities list bit
  std::set<uint8_t> types;
  bool msix = false;
  for (auto [off, id] : d.caps()) {
    if (id == 0x09) {
      EXPECT_EQ(d.cfg_read(off + 4, 1), 0u);  // BAR 0
      uint8_t type = static_cast<uint8_t>(d.cfg_read(off + 3, 1));
      types.insert(type);
      uint32_t offset = d.cfg_read(off + 8), length = d.cfg_read(off + 12);
      EXPECT_LE(uint64_t{offset} + length, virtio::VirtioPciDevice::kBarSize);
      if (type == virtio::kPciCapNotifyCfg) {
        EXPECT_EQ(d.cfg_read(off + 2, 1), 20u);
        EXPECT_EQ(d.cfg_read(off + 16), 4u);  // notify_off_multiplier
      } else {
        EXPECT_EQ(d.cfg_read(off + 2, 1), 16u);
      }
    } else if (id == 0x11) {
      msix = true;
      EXPECT_EQ(d.cfg_read(off + 2, 2) & 0x7ff, 1u);  // 2 vectors: config + 1 queue
    }
  }
  EXPECT_EQ(types, (std::set<uint8_t>{1, 2, 3, 4}));
  EXPECT_TRUE(msix);
}

TEST_F(PciVirtio, StatusStateMachineAndFeatureNegotiation) {
  VirtioGuest& g = rig_->guest;
  rig_->drv.cfg_write(0x04, 0x2, 2);
  g.init(1, 256, 0);  // driver refuses every feature: FEATURES_OK must be refused
  EXPECT_EQ(g.status(), 0x3);
  // DRIVER_OK without FEATURES_OK is ignored.
  g.set_common(virtio::common::kDeviceStatus, 0x7, 1);
  EXPECT_EQ(g.status(), 0x3);
  // Reset, then a feature the device never offered.
  g.set_common(virtio::common::kDeviceStatus, 0, 1);
  EXPECT_EQ(g.status(), 0);
  g.set_common(virtio::common::kDeviceStatus, 3, 1);
  g.set_driver_features(virtio::feature(virtio::kFVersion1) | virtio::feature(40));
  g.set_common(virtio::common::kDeviceStatus, 0xb, 1);
  EXPECT_EQ(g.status(), 0x3);
  // VERSION_1 alone is fine.
  g.set_driver_features(virtio::feature(virtio::kFVersion1));
  g.set_common(virtio::common::kDeviceStatus, 0xb, 1);
  EXPECT_EQ(g.status(), 0xb);
  // Features are frozen after FEATURES_OK.
  g.set_driver_features(0);
  g.set_common(virtio::common::kDriverFeatureSelect, 1, 4);
  EXPECT_EQ(g.common(virtio::common::kDriverFeature, 4), 1u);
  // Queue registers.
  EXPECT_EQ(g.common(virtio::common::kNumQueues, 2), 1u);
  g.set_common(virtio::common::kQueueSelect, 0, 2);
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 256u);
  g.set_common(virtio::common::kQueueSize, 64, 2);
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 64u);
  g.set_common(virtio::common::kQueueSize, 1024, 2);  // above the maximum: ignored
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 64u);
  g.set_common(virtio::common::kQueueMsixVector, 7, 2);  // no such vector
  EXPECT_EQ(g.common(virtio::common::kQueueMsixVector, 2), 0xffffu);
  g.set_common(virtio::common::kQueueMsixVector, 0, 2);
  EXPECT_EQ(g.common(virtio::common::kQueueMsixVector, 2), 0u);
  g.set_common(virtio::common::kQueueDesc, 0x100000, 8);
  g.set_common(virtio::common::kQueueDriver, 0x108000, 4);
  g.set_common(virtio::common::kQueueDriver + 4, 0, 4);
  g.set_common(virtio::common::kQueueDevice, 0x110000, 8);
  EXPECT_EQ(g.common(virtio::common::kQueueDriver, 8), 0x108000u);
  EXPECT_EQ(g.common(virtio::common::kQueueEnable, 2), 0u);
  g.set_common(virtio::common::kQueueEnable, 1, 2);
  EXPECT_EQ(g.common(virtio::common::kQueueEnable, 2), 1u);
  EXPECT_EQ(g.common(virtio::common::kQueueNotifyOff, 2), 0u);
  g.set_common(virtio::common::kQueueSelect, 5, 2);  // no such queue
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 0u);
  g.set_common(virtio::common::kDeviceStatus, 0xf, 1);
  EXPECT_EQ(g.status(), 0xf);
  // Queue setup is frozen after DRIVER_OK; reset clears everything.
  g.set_common(virtio::common::kQueueSelect, 0, 2);
  g.set_common(virtio::common::kQueueSize, 32, 2);
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 64u);
  g.set_common(virtio::common::kDeviceStatus, 0, 1);
  EXPECT_EQ(g.status(), 0);
  EXPECT_EQ(g.common(virtio::common::kQueueEnable, 2), 0u);
  EXPECT_EQ(g.common(virtio::common::kQueueSize, 2), 256u);
  // A ring outside guest memory at DRIVER_OK: DEVICE_NEEDS_RESET, not a crash.
  g.set_common(virtio::common::kDeviceStatus, 0x3, 1);
  g.set_driver_features(virtio::feature(virtio::kFVersion1));
  g.set_common(virtio::common::kDeviceStatus, 0xb, 1);
  g.set_common(virtio::common::kQueueDesc, 0x7ffffffff000ull, 8);
  g.set_common(virtio::common::kQueueEnable, 1, 2);
  g.set_common(virtio::common::kDeviceStatus, 0xf, 1);
  EXPECT_TRUE(g.status() & virtio::kStatusNeedsReset);
  g.set_common(virtio::common::kDeviceStatus, 0, 1);
  EXPECT_EQ(g.status(), 0);
}

TEST_F(PciVirtio, DeviceConfigAndFeatures) {
  VirtioGuest& g = rig_->guest;
  ASSERT_EQ(g.init(1, 128), 0xf);
  uint64_t f = g.features();
  EXPECT_TRUE(f & virtio::feature(virtio::kFVersion1));
  EXPECT_TRUE(f & virtio::feature(virtio::kFRingIndirectDesc));
  EXPECT_TRUE(f & virtio::feature(virtio::kFRingEventIdx));
  EXPECT_TRUE(f & (1u << 9));   // FLUSH
  EXPECT_TRUE(f & (1u << 13));  // DISCARD
  EXPECT_FALSE(f & (1u << 5));  // RO
  uint64_t cfg = g.bar() + virtio::VirtioPciDevice::kDeviceCfgOffset;
  EXPECT_EQ(rig_->drv.mmio_read(cfg, 8), (1u << 20) / 512);  // capacity
  EXPECT_EQ(rig_->drv.mmio_read(cfg + 12, 4), 254u);         // seg_max
  EXPECT_EQ(rig_->drv.mmio_read(cfg + 20, 4), 512u);         // blk_size
  EXPECT_EQ(rig_->drv.mmio_read(cfg + 34, 2), 1u);           // num_queues
}

TEST_F(PciVirtio, MsixFunctionMaskAndVectorMaskHoldThenReleaseInterrupts) {
  VirtioGuest& g = rig_->guest;
  ASSERT_EQ(g.init(1, 128), 0xf);
  ASSERT_EQ(rig_->irq.routes.size(), 2u);  // both vectors routed when unmasked
  auto& msix = static_cast<virtio::VirtioPciDevice&>(*rig_->dev).msix();
  uint64_t table = g.bar() + virtio::VirtioPciDevice::kMsixTableOffset;
  // Mask vector 0 (the queue's), raise it: pending, no interrupt.
  rig_->drv.mmio_write(table + 12, 1, 4);
  msix.notify(0);
  EXPECT_EQ(rig_->irq.take(VirtioGuest::kMsiData), 0u);
  EXPECT_TRUE(msix.pending(0));
  EXPECT_EQ(rig_->drv.mmio_read(g.bar() + virtio::VirtioPciDevice::kMsixPbaOffset, 8), 1u);
  // Reprogram the message while masked, then unmask: the route is updated and the pending
  // interrupt delivered.
  rig_->drv.mmio_write(table + 8, VirtioGuest::kMsiData + 9, 4);
  rig_->drv.mmio_write(table + 12, 0, 4);
  EXPECT_EQ(rig_->irq.updates, 1);
  EXPECT_EQ(rig_->irq.take(VirtioGuest::kMsiData + 9), 1u);
  EXPECT_FALSE(msix.pending(0));
  // Function mask holds every vector.
  uint8_t cap = 0;
  for (auto [off, id] : rig_->drv.caps()) {
    if (id == 0x11) cap = off;
  }
  ASSERT_NE(cap, 0);
  rig_->drv.cfg_write(cap + 2, 0xc000 | 1, 2);
  msix.notify(1);
  EXPECT_EQ(rig_->irq.take(VirtioGuest::kMsiData + 1), 0u);
  rig_->drv.cfg_write(cap + 2, 0x8000 | 1, 2);
  EXPECT_EQ(rig_->irq.take(VirtioGuest::kMsiData + 1), 1u);
  // The table size field is read-only.
  rig_->drv.cfg_write(cap + 2, 0x8000 | 0x7ff, 2);
  EXPECT_EQ(rig_->drv.cfg_read(cap + 2, 2), 0x8001u);
}

// A machine reset (PciBus::reset): the config space as at power-on (decoding off, the BAR back
// where the bus put it, MSI-X disabled), the MSI-X table masked with its routes gone, and the
// virtio device reset, so a new driver finds it as the first one did.
TEST_F(PciVirtio, BusResetPutsEveryFunctionBackToPowerOn) {
  VirtioGuest& g = rig_->guest;
  PciDriver& d = rig_->drv;
  const uint64_t placed = d.bar0();
  const uint32_t command = d.cfg_read(0x04, 2);
  ASSERT_EQ(g.init(1, 128), 0xf);
  ASSERT_EQ(rig_->irq.routes.size(), 2u);
  uint8_t cap = 0;
  for (auto [off, id] : d.caps()) {
    if (id == 0x11) cap = off;
  }
  ASSERT_NE(cap, 0);
  ASSERT_EQ(d.cfg_read(cap + 2, 2) & 0x8000, 0x8000u);
  uint64_t bar = g.bar();
  ASSERT_NE(static_cast<virtio::VirtioPciDevice&>(*rig_->dev).device_status(), 0);
  // The guest also moved the BAR.
  d.cfg_write(0x04, 0, 2);
  d.cfg_write(0x10, 0xd0000000);
  d.cfg_write(0x04, 0x6, 2);

  const int removed = rig_->irq.removed;
  rig_->pci.reset();
  EXPECT_EQ(d.cfg_read(0x04, 2), command);
  EXPECT_EQ(d.bar0(), placed);
  EXPECT_EQ(d.cfg_read(cap + 2, 2) & 0xc000, 0u);
  EXPECT_EQ(rig_->irq.removed - removed, 2);  // both vectors' routes
  uint8_t b;
  EXPECT_FALSE(rig_->mmio.read(0xd0000000 + 0x12, std::span<uint8_t>(&b, 1)));
  EXPECT_FALSE(rig_->mmio.read(bar + 0x12, std::span<uint8_t>(&b, 1)));
  EXPECT_EQ(static_cast<virtio::VirtioPciDevice&>(*rig_->dev).device_status(), 0);
  // The host bridge too.
  PciDriver host(rig_->pci, rig_->mmio, 0);
  EXPECT_EQ(host.cfg_read(0), 0x0d578086u);
  // Decoding on again, the table reads masked and zero; a new driver brings the device up.
  d.cfg_write(0x04, 0x2, 2);
  uint64_t table = placed + virtio::VirtioPciDevice::kMsixTableOffset;
  EXPECT_EQ(d.mmio_read(table, 8), 0u);
  EXPECT_EQ(d.mmio_read(table + 12, 4), 1u);
  EXPECT_EQ(g.init(1, 128), 0xf);
  EXPECT_EQ(rig_->irq.routes.size(), 4u);  // two new routes (the fake keeps removed ones)
}

}  // namespace
}  // namespace vmm::testing
