// virtio-blk end to end without KVM: a guest driver posts requests into guest RAM, the device's
// I/O thread runs them on libimg, and the results are checked against the image file. Hostile
// chains each get a device error or an IOERR/UNSUPP status, and the device keeps working.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>

#include "img/image.h"
#include "virtio/blk/blk_device.h"
#include "virtio/blk/blk_spec.h"
#include "virtio/virtio_pci.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vb = virtio::blk;
constexpr uint64_t kDisk = 4 << 20;
constexpr uint64_t kData = 0x1000000;  // data buffers from 16 MiB on
using Buf = VirtioGuest::Buf;

class VirtioBlk : public ::testing::Test {
 protected:
  void start(BlkConfig cfg = {}, uint16_t qsize = 256, uint64_t mask = ~0ull, bool make = true) {
    if (make) path_ = make_raw("virtio_blk", kDisk);
    cfg.path = path_;
    if (cfg.format.empty()) cfg.format = "raw";
    if (cfg.serial.empty()) cfg.serial = "vmm-serial-0123456789abc";
    rig_ = std::make_unique<Rig>(cfg);
    ASSERT_TRUE(rig_->ok()) << rig_->error;
    ASSERT_EQ(rig_->guest.init(cfg.num_queues ? cfg.num_queues : 1, qsize, mask), 0xf);
  }
  void TearDown() override {
    rig_.reset();
    if (!path_.empty()) unlink(path_.c_str());
  }
  VirtioGuest& g() { return rig_->guest; }
  GuestRam& ram() { return rig_->ram; }
  // Posts head on q, notifies, waits for the used ring to reach the avail index.
  std::pair<uint32_t, uint32_t> run(uint16_t head, unsigned q = 0) {
    g().make_available(q, head);
    g().notify(q);
    uint16_t want = g().avail_idx(q);
    EXPECT_TRUE(wait_for([&] { return g().used_idx(q) == want; })) << "no completion";
    return g().used_elem(q, static_cast<uint16_t>(want - 1));
  }
  // A 4 KiB read of sector s into kData; returns the status.
  uint8_t read4k(uint64_t sector, unsigned slot = 0) {
    std::memset(ram().at(kData), 0, 4096);
    auto [id, len] = run(g().blk_chain(0, slot, vb::kTIn, sector, {{kData, 4096, true}}));
    uint8_t st = g().blk_status(slot);
    if (st == vb::kSOk) {
      EXPECT_EQ(len, 4097u);
    }
    return st;
  }
  bool data_matches_file(uint64_t gpa, uint64_t off, uint64_t len) {
    return file_bytes(path_, off, len) == std::vector<uint8_t>(ram().at(gpa), ram().at(gpa) + len);
  }
  // After a hostile chain: the device is alive and reads correctly.
  void expect_healthy() {
    EXPECT_EQ(read4k(24, 1), vb::kSOk);
    EXPECT_TRUE(data_matches_file(kData, 24 * 512, 4096));
    EXPECT_FALSE(g().status() & virtio::kStatusNeedsReset);
  }
  std::string path_;
  std::unique_ptr<Rig> rig_;
};

TEST_F(VirtioBlk, ReadWriteFlushGetId) {
  start();
  EXPECT_EQ(read4k(8), vb::kSOk);
  EXPECT_TRUE(data_matches_file(kData, 8 * 512, 4096));
  // Queue 0's vector (raised just after the used ring is published: wait for it)
  EXPECT_TRUE(wait_for([&] { return rig_->irq.take(VirtioGuest::kMsiData) >= 1; }));

  // An 8 KiB write from two buffers, then read back from the file.
  for (int i = 0; i < 8192; ++i) ram().at(kData + 0x10000)[i] = static_cast<uint8_t>(i * 3 + 5);
  auto [id, len] = run(g().blk_chain(
      0, 0, vb::kTOut, 100, {{kData + 0x10000, 4096, false}, {kData + 0x11000, 4096, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  EXPECT_EQ(len, 1u);
  EXPECT_TRUE(data_matches_file(kData + 0x10000, 100 * 512, 8192));

  run(g().blk_chain(0, 0, vb::kTFlush, 0, {}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);

  std::memset(ram().at(kData), 0xaa, 32);
  std::tie(id, len) = run(g().blk_chain(0, 0, vb::kTGetId, 0, {{kData, 20, true}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  EXPECT_EQ(len, 21u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(ram().at(kData)), 20), "vmm-serial-012345678");
}

TEST_F(VirtioBlk, IndirectDescriptors) {
  start();
  // Header, two 2 KiB data buffers and the status in an indirect table.
  uint64_t table = 0x900000, h = VirtioGuest::kReqBase;
  ram().put<uint32_t>(h, vb::kTIn);
  ram().put<uint64_t>(h + 8, 40);
  Buf bufs[] = {
      {h, 16, false}, {kData, 2048, true}, {kData + 0x8000, 2048, true}, {h + 16, 1, true}};
  for (int i = 0; i < 4; ++i) {
    ram().put<uint64_t>(table + i * 16, bufs[i].addr);
    ram().put<uint32_t>(table + i * 16 + 8, bufs[i].len);
    ram().put<uint16_t>(table + i * 16 + 12, (bufs[i].writable ? 2 : 0) | (i < 3 ? 1 : 0));
    ram().put<uint16_t>(table + i * 16 + 14, i + 1);
  }
  g().write_desc(0, 200, table, 64, virtio::kDescFIndirect, 0);
  auto [id, len] = run(200);
  EXPECT_EQ(id, 200u);
  EXPECT_EQ(len, 4097u);
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  EXPECT_TRUE(data_matches_file(kData, 40 * 512, 2048));
  EXPECT_TRUE(data_matches_file(kData + 0x8000, 40 * 512 + 2048, 2048));
}

TEST_F(VirtioBlk, DiscardAndWriteZeroes) {
  start();
  uint64_t seg = kData + 0x20000;
  // Write zeroes over 16 sectors at 64 (no unmap) and 8 at 200 (unmap), in one request.
  ram().put<uint64_t>(seg, 64);
  ram().put<uint32_t>(seg + 8, 16);
  ram().put<uint32_t>(seg + 12, 0);
  ram().put<uint64_t>(seg + 16, 200);
  ram().put<uint32_t>(seg + 24, 8);
  ram().put<uint32_t>(seg + 28, vb::kSegFlagUnmap);
  run(g().blk_chain(0, 0, vb::kTWriteZeroes, 0, {{seg, 32, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  EXPECT_EQ(file_bytes(path_, 64 * 512, 16 * 512), std::vector<uint8_t>(16 * 512, 0));
  EXPECT_EQ(file_bytes(path_, 200 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
  EXPECT_EQ(file_bytes(path_, 80 * 512, 1)[0], pattern(80 * 512));
  // Discard: OK status; raw discards punch holes.
  ram().put<uint64_t>(seg, 512);
  ram().put<uint32_t>(seg + 8, 8);
  ram().put<uint32_t>(seg + 12, 0);
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{seg, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  // Discard with the unmap flag and write-zeroes with reserved flags are unsupported.
  ram().put<uint32_t>(seg + 12, vb::kSegFlagUnmap);
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{seg, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSUnsupp);
  ram().put<uint32_t>(seg + 12, 0x10);
  run(g().blk_chain(0, 0, vb::kTWriteZeroes, 0, {{seg, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSUnsupp);
  // Past capacity, too many sectors, too many segments, ragged length: IOERR.
  ram().put<uint32_t>(seg + 12, 0);
  ram().put<uint64_t>(seg, kDisk / 512 - 4);
  run(g().blk_chain(0, 0, vb::kTWriteZeroes, 0, {{seg, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSIoErr);
  ram().put<uint64_t>(seg, 0);
  ram().put<uint32_t>(seg + 8, 0x400000);
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{seg, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSIoErr);
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{seg, 33 * 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSIoErr);
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{seg, 20, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSIoErr);
  expect_healthy();
}

TEST_F(VirtioBlk, ReadOnlyRejectsWrites) {
  start(BlkConfig{.read_only = true});
  EXPECT_TRUE(g().features() & (1u << vb::kFRo));
  EXPECT_FALSE(g().features() & (1u << vb::kFDiscard));
  run(g().blk_chain(0, 0, vb::kTOut, 0, {{kData, 512, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSIoErr);
  EXPECT_EQ(file_bytes(path_, 0, 1)[0], pattern(0));
  run(g().blk_chain(0, 0, vb::kTDiscard, 0, {{kData, 16, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSUnsupp);  // not negotiated
  run(g().blk_chain(0, 0, vb::kTFlush, 0, {}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  expect_healthy();
}

TEST_F(VirtioBlk, HostileChainsGetErrorsAndTheDeviceKeepsWorking) {
  start();
  uint64_t h = VirtioGuest::kReqBase;
  ram().put<uint32_t>(h, vb::kTIn);
  ram().put<uint64_t>(h + 8, 0);
  auto dropped = [&](uint16_t head, const char* what) {
    auto [id, len] = run(head);
    EXPECT_EQ(id, head) << what;
    EXPECT_EQ(len, 0u) << what;
    expect_healthy();
  };
  auto refused = [&](uint16_t head, uint8_t code, const char* what) {
    ram().put<uint8_t>(h + 16, 0xee);
    auto [id, len] = run(head);
    EXPECT_EQ(id, head) << what;
    EXPECT_EQ(len, 1u) << what;
    EXPECT_EQ(g().blk_status(0), code) << what;
    expect_healthy();
  };
  // A loop: 100 -> 101 -> 102 -> 101.
  g().write_desc(0, 100, h, 16, virtio::kDescFNext, 101);
  g().write_desc(0, 101, kData, 512, virtio::kDescFNext | virtio::kDescFWrite, 102);
  g().write_desc(0, 102, kData, 512, virtio::kDescFNext | virtio::kDescFWrite, 101);
  dropped(100, "loop");
  // Next index past the table.
  g().write_desc(0, 100, h, 16, virtio::kDescFNext, 300);
  dropped(100, "next out of range");
  // Address outside guest memory; address + length wrapping.
  g().write_desc(0, 100, h, 16, virtio::kDescFNext, 101);
  g().write_desc(0, 101, 1ull << 40, 512, virtio::kDescFNext | virtio::kDescFWrite, 102);
  g().write_desc(0, 102, h + 16, 1, virtio::kDescFWrite, 0);
  dropped(100, "outside memory");
  g().write_desc(0, 101, ~0ull - 0xfff, 0x2000, virtio::kDescFNext | virtio::kDescFWrite, 102);
  dropped(100, "overflow");
  // Status not writable; zero-length status.
  g().write_desc(0, 101, kData, 512, virtio::kDescFNext | virtio::kDescFWrite, 102);
  g().write_desc(0, 102, h + 16, 1, 0, 0);
  dropped(100, "read-only status after writable");
  g().write_desc(0, 100, h, 16, virtio::kDescFNext, 101);
  g().write_desc(0, 101, h + 16, 1, 0, 0);
  dropped(100, "read-only status");
  g().write_desc(0, 101, h + 16, 0, virtio::kDescFWrite, 0);
  dropped(100, "zero-length status");
  // Read into a device-readable buffer; write from a device-writable one.
  refused(g().blk_chain(0, 0, vb::kTIn, 0, {{kData, 512, false}}), vb::kSIoErr,
          "read into readable");
  ram().put<uint8_t>(h + 16, 0xee);
  g().write_desc(0, 100, h, 16, virtio::kDescFNext, 101);
  g().write_desc(0, 101, h + 16, 1, virtio::kDescFWrite, 0);
  ram().put<uint32_t>(h, vb::kTOut);
  refused(g().blk_chain(0, 0, vb::kTOut, 0, {{kData, 512, true}}), vb::kSIoErr,
          "write from writable");
  // Ragged length, sector past capacity, sector overflow, unknown type, header too short.
  refused(g().blk_chain(0, 0, vb::kTIn, 0, {{kData, 100, true}}), vb::kSIoErr, "ragged");
  refused(g().blk_chain(0, 0, vb::kTIn, kDisk / 512 - 7, {{kData, 4096, true}}), vb::kSIoErr,
          "past end");
  refused(g().blk_chain(0, 0, vb::kTIn, ~0ull - 2, {{kData, 4096, true}}), vb::kSIoErr,
          "sector wrap");
  refused(g().blk_chain(0, 0, 77, 0, {}), vb::kSUnsupp, "unknown type");
  refused(g().blk_chain(0, 0, vb::kTIn, 0, {{kData, 2 << 20, true}}), vb::kSIoErr, "size_max");
  // Too many descriptors: an indirect table longer than the queue.
  uint64_t table = 0xa00000;
  for (int i = 0; i < 300; ++i) {
    ram().put<uint64_t>(table + i * 16, kData);
    ram().put<uint32_t>(table + i * 16 + 8, 512);
    ram().put<uint16_t>(table + i * 16 + 12, virtio::kDescFNext | virtio::kDescFWrite);
    ram().put<uint16_t>(table + i * 16 + 14, i + 1);
  }
  g().write_desc(0, 100, table, 300 * 16, virtio::kDescFIndirect, 0);
  dropped(100, "too many descriptors");
  // Indirect table outside memory, ragged, nested, and INDIRECT|NEXT.
  g().write_desc(0, 100, 1ull << 40, 64, virtio::kDescFIndirect, 0);
  dropped(100, "indirect outside memory");
  g().write_desc(0, 100, table, 40, virtio::kDescFIndirect, 0);
  dropped(100, "indirect ragged");
  ram().put<uint16_t>(table + 12, virtio::kDescFIndirect);
  g().write_desc(0, 100, table, 64, virtio::kDescFIndirect, 0);
  dropped(100, "nested indirect");
  g().write_desc(0, 100, table, 64, virtio::kDescFIndirect | virtio::kDescFNext, 101);
  dropped(100, "indirect with next");
}

TEST_F(VirtioBlk, BrokenAvailRingNeedsResetThenRecovers) {
  start();
  g().make_available(0, 999);  // head out of range
  g().notify(0);
  EXPECT_TRUE(wait_for([&] { return (g().status() & virtio::kStatusNeedsReset) != 0; }));
  // Config vector (raised just after the used ring is published: wait for it)
  EXPECT_TRUE(wait_for([&] { return rig_->irq.take(VirtioGuest::kMsiData + 1) >= 1; }));
  ASSERT_EQ(g().init(1, 256), 0xf);
  expect_healthy();
}

TEST_F(VirtioBlk, ManyRequestsInFlight) {
  start();
  constexpr int kN = 80;  // 3 descriptors each: 240 of 256
  for (int i = 0; i < kN; ++i) {
    uint16_t head = g().blk_chain(0, i, vb::kTIn, i * 16, {{kData + i * 8192ull, 8192, true}});
    g().make_available(0, head);
  }
  g().notify(0);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == kN; }));
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(g().blk_status(i), vb::kSOk);
    EXPECT_TRUE(data_matches_file(kData + i * 8192ull, i * 16 * 512ull, 8192)) << i;
  }
  // Interrupts are coalesced: far fewer than one per request. The device publishes the used
  // index before it signals, so the interrupt may come just after the index the test saw.
  uint64_t irqs = 0;
  EXPECT_TRUE(wait_for([&] { return (irqs += rig_->irq.take(VirtioGuest::kMsiData)) >= 1; }));
  EXPECT_LT(irqs, static_cast<uint64_t>(kN));
  // And again, wrapping the rings.
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < kN; ++i) {
      g().make_available(0,
                         g().blk_chain(0, i, vb::kTIn, i * 8, {{kData + i * 8192ull, 4096, true}}));
    }
    g().notify(0);
    uint16_t want = g().avail_idx(0);
    ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == want; }));
  }
  expect_healthy();
}

TEST_F(VirtioBlk, WithoutEventIdxOrIndirect) {
  start({}, 64,
        ~(virtio::feature(virtio::kFRingEventIdx) | virtio::feature(virtio::kFRingIndirectDesc)));
  EXPECT_EQ(read4k(3), vb::kSOk);
  EXPECT_TRUE(data_matches_file(kData, 3 * 512, 4096));
  g().write_desc(0, 50, 0x900000, 64, virtio::kDescFIndirect, 0);
  auto [id, len] = run(50);
  EXPECT_EQ(len, 0u);  // indirect not negotiated: dropped
  expect_healthy();
}

TEST_F(VirtioBlk, MultiQueue) {
  start(BlkConfig{.num_queues = 2});
  EXPECT_TRUE(g().features() & (1u << vb::kFMq));
  EXPECT_EQ(run(g().blk_chain(1, 3, vb::kTIn, 16, {{kData, 4096, true}}), 1).second, 4097u);
  EXPECT_EQ(g().blk_status(3), vb::kSOk);
  EXPECT_TRUE(data_matches_file(kData, 16 * 512, 4096));
  // Queue 1's vector (raised just after the used ring is published: wait for it)
  EXPECT_TRUE(wait_for([&] { return rig_->irq.take(VirtioGuest::kMsiData + 1) >= 1; }));
  // Through the ioeventfd, as KVM would deliver it.
  g().make_available(1, g().blk_chain(1, 3, vb::kTIn, 32, {{kData, 4096, true}}));
  ASSERT_TRUE(rig_->io.kick(g().bar() + virtio::VirtioPciDevice::kNotifyOffset + 4));
  ASSERT_TRUE(wait_for([&] { return g().used_idx(1) == 2; }));
  EXPECT_TRUE(data_matches_file(kData, 32 * 512, 4096));
}

// Bug: without io_uring, the worker blocked in poll(2) on the first queue's ioeventfd, so a
// request on the second queue was never served.
TEST_F(VirtioBlk, MultiQueueWithoutIoUringServesEveryQueue) {
  start(BlkConfig{.num_queues = 2, .force_sync_io = true});
  const uint64_t notify = g().bar() + virtio::VirtioPciDevice::kNotifyOffset;
  for (uint16_t round = 1; round <= 3; ++round) {
    for (unsigned q : {1u, 0u}) {  // queue 1 first: its worker coroutine is not the first
      uint64_t sector = 8 * (round * 2 + q);
      g().make_available(q, g().blk_chain(q, 3, vb::kTIn, sector, {{kData, 4096, true}}));
      ASSERT_TRUE(rig_->io.kick(notify + 4 * q));
      ASSERT_TRUE(wait_for([&] { return g().used_idx(q) == round; }))
          << "queue " << q << " not served in round " << round;
      EXPECT_EQ(g().blk_status(3), vb::kSOk);
      EXPECT_TRUE(data_matches_file(kData, sector * 512, 4096));
    }
  }
}

TEST_F(VirtioBlk, Qcow2WritesReadBackThroughLibimg) {
  path_ = temp_path("virtio_blk.qcow2");
  std::string cmd = "qemu-img create -q -f qcow2 " + path_ + " 4M";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  {
    auto loop = img::IoLoop::create().value();
    auto d = loop->run(img::open_image(*loop, path_, {.format = "qcow2"}));
    if (!d) GTEST_SKIP() << "qcow2 driver not available: " << d.error().to_string();
    (void)loop->run((*d)->close());
  }
  start(BlkConfig{.format = "qcow2"}, 256, ~0ull, /*make=*/false);
  for (int i = 0; i < 65536; ++i) ram().at(kData)[i] = static_cast<uint8_t>(i * 11 + 3);
  // 16 writes of 4 KiB in flight at once, spread over clusters.
  for (int i = 0; i < 16; ++i) {
    g().make_available(
        0, g().blk_chain(0, i, vb::kTOut, i * 200, {{kData + i * 4096ull, 4096, false}}));
  }
  g().notify(0);
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == 16; }));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(g().blk_status(i), vb::kSOk);
  run(g().blk_chain(0, 0, vb::kTFlush, 0, {}));
  // Read back through the device, then through libimg after the device is gone.
  std::memset(ram().at(kData + 0x100000), 0, 4096);
  run(g().blk_chain(0, 0, vb::kTIn, 5 * 200, {{kData + 0x100000, 4096, true}}));
  EXPECT_EQ(0, std::memcmp(ram().at(kData + 0x100000), ram().at(kData + 5 * 4096), 4096));
  std::vector<uint8_t> expect(ram().at(kData), ram().at(kData) + 65536);
  rig_.reset();
  auto loop = img::IoLoop::create().value();
  auto d = loop->run(img::open_image(*loop, path_, {.format = "qcow2", .read_only = true}));
  ASSERT_TRUE(d) << d.error().to_string();
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(loop->run((*d)->read(i * 200 * 512ull, buf.data(), 4096)));
    EXPECT_EQ(0, std::memcmp(buf.data(), expect.data() + i * 4096, 4096)) << i;
  }
  std::string check = "qemu-img check -q " + path_;
  EXPECT_EQ(std::system(check.c_str()), 0);
}

}  // namespace
}  // namespace vmm::testing

namespace vmm::testing {
namespace {

// §2.7.4 Message Framing: a request may be split into descriptors any way the driver likes.
// Here the header shares a descriptor with the write data, and the read data shares one with
// the status byte.
class VirtioBlkFraming : public VirtioBlk {};

TEST_F(VirtioBlkFraming, HeaderWithDataAndDataWithStatusInOneDescriptor) {
  start();
  uint64_t req = 0xa00000;
  // OUT: [header + 1024 bytes of data] (readable), [status] (writable).
  ram().put<uint32_t>(req, vb::kTOut);
  ram().put<uint32_t>(req + 4, 0);
  ram().put<uint64_t>(req + 8, 300);
  for (int i = 0; i < 1024; ++i) ram().at(req + 16)[i] = static_cast<uint8_t>(i * 7 + 1);
  uint16_t head = g().write_chain(0, {{req, 16 + 1024, false}, {req + 0x2000, 1, true}});
  ram().put<uint8_t>(req + 0x2000, 0xff);
  auto [id, len] = run(head);
  EXPECT_EQ(ram().get<uint8_t>(req + 0x2000), vb::kSOk);
  EXPECT_EQ(len, 1u);
  EXPECT_TRUE(data_matches_file(req + 16, 300 * 512, 1024));

  // IN: [header] (readable), [1024 bytes of data + status] (writable).
  uint64_t in = 0xb00000;
  ram().put<uint32_t>(in, vb::kTIn);
  ram().put<uint32_t>(in + 4, 0);
  ram().put<uint64_t>(in + 8, 300);
  std::memset(ram().at(in + 0x1000), 0, 1025);
  head = g().write_chain(0, {{in, 16, false}, {in + 0x1000, 1025, true}});
  std::tie(id, len) = run(head);
  EXPECT_EQ(ram().get<uint8_t>(in + 0x1000 + 1024), vb::kSOk);
  EXPECT_EQ(len, 1025u);
  EXPECT_TRUE(data_matches_file(in + 0x1000, 300 * 512, 1024));

  // A header split over two descriptors (8 + 8 bytes) works too.
  uint64_t sp = 0xc00000;
  ram().put<uint32_t>(sp, vb::kTIn);
  ram().put<uint32_t>(sp + 4, 0);
  ram().put<uint64_t>(sp + 0x100, 300);
  head = g().write_chain(
      0,
      {{sp, 8, false}, {sp + 0x100, 8, false}, {sp + 0x1000, 512, true}, {sp + 0x2000, 1, true}});
  std::tie(id, len) = run(head);
  EXPECT_EQ(ram().get<uint8_t>(sp + 0x2000), vb::kSOk);
  EXPECT_TRUE(data_matches_file(sp + 0x1000, 300 * 512, 512));
  expect_healthy();
}

// Device reset (§2.4) while requests are in flight: block I/O is drained, not cancelled. Every
// request the device took completes with a real status before the reset returns, nothing is
// written to guest memory afterwards, and the device serves again after re-initialisation.
TEST_F(VirtioBlk, ResetWithRequestsInFlightDrainsThemThenWritesNothing) {
  start();
  constexpr int kN = 80;
  for (int i = 0; i < kN; ++i) {
    std::memset(ram().at(kData + i * 8192ull), 0, 8192);
    g().make_available(0,
                       g().blk_chain(0, i, vb::kTIn, i * 16, {{kData + i * 8192ull, 8192, true}}));
  }
  g().notify(0);
  g().set_common(virtio::common::kDeviceStatus, 0, 1);  // reset at once, requests in flight
  ASSERT_EQ(g().status(), 0);
  uint16_t done = g().used_idx(0);
  std::vector<uint8_t> snapshot(ram().at(kData), ram().at(kData) + kN * 8192ull);
  for (uint16_t i = 0; i < done; ++i) {
    auto [id, len] = g().used_elem(0, i);
    unsigned slot = id / 3;  // blk_chain uses three descriptors per request
    EXPECT_EQ(g().blk_status(slot), vb::kSOk) << "request " << slot;
    EXPECT_EQ(len, 8193u);
    EXPECT_TRUE(data_matches_file(kData + slot * 8192ull, slot * 16 * 512ull, 8192)) << slot;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(g().used_idx(0), done) << "used ring written after reset";
  EXPECT_EQ(std::memcmp(snapshot.data(), ram().at(kData), snapshot.size()), 0)
      << "guest memory written after reset";
  ASSERT_EQ(g().init(1, 256), 0xf);
  expect_healthy();
}

// Resize under a running driver (the control socket's block_resize): it waits for the requests
// in flight, grows the image through libimg, and the driver sees the new capacity with a
// configuration change; reads past the old end then work and past the new end fail. A shrink, an
// odd size and a read-only disk are refused and change nothing.
std::string output_of(const std::string& cmd) {
  std::string out;
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  pclose(f);
  return out;
}

struct VirtioBlkResize : VirtioBlk {
  img::Status resize(uint64_t bytes) {
    auto* pci = static_cast<virtio::VirtioPciDevice*>(rig_->dev.get());
    return pci->with_device(
        [&](virtio::VirtioDevice& d) { return static_cast<vb::BlkDevice&>(d).resize(bytes); });
  }
  uint64_t capacity() {
    return rig_->drv.mmio_read(
               g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset + vb::cfg::kCapacity, 4) |
           rig_->drv.mmio_read(
               g().bar() + virtio::VirtioPciDevice::kDeviceCfgOffset + vb::cfg::kCapacity + 4, 4)
               << 32;
  }
  uint8_t generation() {
    return static_cast<uint8_t>(g().common(virtio::common::kConfigGeneration, 1));
  }
};

TEST_F(VirtioBlkResize, GrowsWithRequestsInFlightAndTheDriverSeesTheNewCapacity) {
  start();
  ASSERT_EQ(capacity(), kDisk / 512);
  constexpr int kN = 80;
  for (int i = 0; i < kN; ++i) {
    g().make_available(0,
                       g().blk_chain(0, i, vb::kTIn, i * 16, {{kData + i * 8192ull, 8192, true}}));
  }
  g().notify(0);
  const uint8_t gen = generation();
  ASSERT_TRUE(resize(2 * kDisk)) << "with requests in flight";
  ASSERT_TRUE(wait_for([&] { return g().used_idx(0) == kN; }));
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(g().blk_status(i), vb::kSOk) << i;
    EXPECT_TRUE(data_matches_file(kData + i * 8192ull, i * 16 * 512ull, 8192)) << i;
  }
  EXPECT_EQ(capacity(), 2 * kDisk / 512);
  EXPECT_NE(generation(), gen) << "no configuration change";
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 2 * kDisk);
  // The new space: readable (zeros) and writable; past it, an error.
  std::memset(ram().at(kData), 0xee, 4096);
  EXPECT_EQ(read4k(kDisk / 512 + 8), vb::kSOk);
  EXPECT_EQ(ram().at(kData)[100], 0);
  std::memset(ram().at(kData + 0x10000), 0x3c, 4096);
  run(g().blk_chain(0, 0, vb::kTOut, 2 * kDisk / 512 - 8, {{kData + 0x10000, 4096, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  EXPECT_EQ(file_bytes(path_, 2 * kDisk - 4096, 1)[0], 0x3c);
  EXPECT_NE(read4k(2 * kDisk / 512 - 4), vb::kSOk);  // runs past the new end
  // Refused, nothing changed: a shrink, an odd size, the same size is a no-op.
  auto shrink = resize(kDisk);
  ASSERT_FALSE(shrink);
  EXPECT_NE(shrink.error().message().find("only growing"), std::string::npos)
      << shrink.error().message();
  EXPECT_FALSE(resize(2 * kDisk + 100));
  EXPECT_TRUE(resize(2 * kDisk));
  EXPECT_EQ(capacity(), 2 * kDisk / 512);
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 2 * kDisk);
  expect_healthy();
}

TEST_F(VirtioBlkResize, AReadOnlyDiskIsRefused) {
  start(BlkConfig{.read_only = true});
  EXPECT_FALSE(resize(2 * kDisk));
  EXPECT_EQ(capacity(), kDisk / 512);
}

TEST_F(VirtioBlkResize, BeforeTheDriverStartsAndOnQcow2) {
  path_ = temp_path("virtio_blk_resize.qcow2");
  ASSERT_EQ(std::system(("qemu-img create -q -f qcow2 " + path_ + " 4M").c_str()), 0);
  BlkConfig cfg{.format = "qcow2"};
  cfg.path = path_;
  rig_ = std::make_unique<Rig>(cfg);
  ASSERT_TRUE(rig_->ok()) << rig_->error;
  ASSERT_TRUE(resize(6 << 20));  // no driver yet: the resize runs on the caller's thread
  ASSERT_EQ(g().init(1, 256), 0xf);
  EXPECT_EQ(capacity(), (6u << 20) / 512);
  ASSERT_TRUE(resize(64 << 20));  // running
  EXPECT_EQ(capacity(), (64u << 20) / 512);
  std::memset(ram().at(kData), 0x77, 4096);
  run(g().blk_chain(0, 0, vb::kTOut, (60 << 20) / 512, {{kData, 4096, false}}));
  EXPECT_EQ(g().blk_status(0), vb::kSOk);
  rig_.reset();
  std::string info = output_of("qemu-img info --output=json " + path_);
  EXPECT_NE(info.find("\"virtual-size\": 67108864"), std::string::npos) << info;
  EXPECT_EQ(std::system(("qemu-img check -q " + path_).c_str()), 0);
  std::string io = output_of("qemu-io -f qcow2 -c 'read -P 0x77 60M 4k' " + path_);
  EXPECT_NE(io.find("read 4096/4096"), std::string::npos) << io;
}

}  // namespace
}  // namespace vmm::testing
