// virtio-scsi (virtio/scsi/) through the PCI transport over fake guest memory, on a qcow2 that
// qemu-img made: what Linux's sd driver reads at probe (INQUIRY, VPD pages, READ CAPACITY, MODE
// SENSE, REPORT LUNS), writes read back and seen by qemu-img, UNMAP reading zeros with a clean
// qemu-img check, the sense data of each error class, task management, and hostile chains that
// get a response code or used length 0 without touching memory outside their buffers.
#include <gtest/gtest.h>

#include "img/image.h"
#include "img/mem_file.h"
#include "run_shell.h"
#include "virtio/scsi/scsi_device.h"
#include "virtio/scsi/scsi_spec.h"
#include "virtio_rig.h"

namespace vmm::testing {
namespace {

namespace vs = virtio::scsi;
using Buf = VirtioGuest::Buf;
constexpr uint64_t kReq = 0x900000, kResp = 0x901000, kOut = 0xa00000, kIn = 0xc00000;
constexpr uint16_t kReqQ = vs::kFirstRequestQueue;

struct Reply {
  uint32_t used = 0;
  uint8_t response = 0xff, status = 0xff;
  uint32_t sense_len = 0, resid = 0;
  std::vector<uint8_t> sense, data;
  uint8_t key() const { return sense.size() > 2 ? sense[2] & 0xf : 0xff; }
  uint8_t asc() const { return sense.size() > 12 ? sense[12] : 0xff; }
};

std::vector<uint8_t> lun_addr(uint16_t lun, uint8_t target = 0) {
  return {1, target, uint8_t(0x40 | lun >> 8), uint8_t(lun), 0, 0, 0, 0};
}

bool have_qemu_img() { return std::system("command -v qemu-img >/dev/null 2>&1") == 0; }

class VirtioScsi : public ::testing::Test {
 protected:
  void start_with(img::Result<std::unique_ptr<vs::ScsiDevice>> dev) {
    rig_ = std::make_unique<DeviceRig>(as_device(std::move(dev)));
    ASSERT_TRUE(rig_->ok()) << rig_->error;
    ASSERT_EQ(rig_->guest.init(3, 64) & 0xf, 0xf);
  }
  // LUN 0: a 64 MiB qcow2 from qemu-img (64 KiB clusters); more LUNs as given.
  void start(std::vector<vs::ScsiDiskConfig> extra = {}, bool lun0_writethrough = false) {
    if (!have_qemu_img()) GTEST_SKIP() << "qemu-img not installed";
    path_ = temp_path("virtio_scsi.qcow2");
    ASSERT_EQ(0, std::system(("qemu-img create -q -f qcow2 " + path_ + " 64M").c_str()));
    std::vector<vs::ScsiDiskConfig> cfgs{{path_, "qcow2", false, false, !lun0_writethrough}};
    cfgs.insert(cfgs.end(), extra.begin(), extra.end());
    start_with(vs::make_scsi_device(cfgs));
  }
  void TearDown() override {
    rig_.reset();
    for (const std::string& p : cleanup_) unlink(p.c_str());
    if (!path_.empty()) unlink(path_.c_str());
  }
  VirtioGuest& g() { return rig_->guest; }
  GuestRam& ram() { return rig_->ram; }
  // Closes the device (images closed and clean), so qemu-img can look.
  void stop() { rig_.reset(); }

  uint32_t post(unsigned q, const std::vector<Buf>& bufs) {
    uint16_t before = g().used_idx(q);
    uint16_t head = g().write_chain(q, bufs);
    g().make_available(q, head);
    g().notify(q);
    EXPECT_TRUE(wait_for([&] { return g().used_idx(q) != before; })) << "no completion";
    auto [id, len] = g().used_elem(q, before);
    EXPECT_EQ(id, head);
    return len;
  }
  // One command: header at kReq, data-out at kOut, response at kResp, data-in at kIn.
  Reply cmd(std::vector<uint8_t> cdb, uint32_t in_len = 0, std::vector<uint8_t> out = {},
            std::vector<uint8_t> lun = lun_addr(0)) {
    std::vector<uint8_t> h(19 + 32, 0);
    std::copy(lun.begin(), lun.end(), h.begin());
    h[8] = 0x2a;  // tag
    std::copy(cdb.begin(), cdb.end(), h.begin() + 19);
    std::memcpy(ram().at(kReq), h.data(), h.size());
    std::memset(ram().at(kResp), 0xee, 12 + 96);
    std::memset(ram().at(kIn), 0xee, in_len + 4096);
    std::vector<Buf> bufs{{kReq, uint32_t(h.size()), false}};
    if (!out.empty()) {
      std::memcpy(ram().at(kOut), out.data(), out.size());
      bufs.push_back({kOut, uint32_t(out.size()), false});
    }
    bufs.push_back({kResp, 12 + 96, true});
    if (in_len) bufs.push_back({kIn, in_len, true});
    Reply r;
    r.used = post(kReqQ, bufs);
    r.sense_len = ram().get<uint32_t>(kResp);
    r.resid = ram().get<uint32_t>(kResp + 4);
    r.status = ram().get<uint8_t>(kResp + 10);
    r.response = ram().get<uint8_t>(kResp + 11);
    r.sense.assign(ram().at(kResp + 12), ram().at(kResp + 12) + std::min(r.sense_len, 96u));
    uint32_t got = r.used > 108 ? r.used - 108 : 0;
    r.data.assign(ram().at(kIn), ram().at(kIn) + got);
    return r;
  }
  static std::vector<uint8_t> rw16(uint8_t op, uint64_t lba, uint32_t n, uint8_t flags = 0) {
    std::vector<uint8_t> c(16, 0);
    c[0] = op;
    c[1] = flags;
    for (int i = 0; i < 8; ++i) c[2 + i] = uint8_t(lba >> (56 - 8 * i));
    for (int i = 0; i < 4; ++i) c[10 + i] = uint8_t(n >> (24 - 8 * i));
    return c;
  }
  static uint32_t be32(const std::vector<uint8_t>& d, size_t at) {
    return uint32_t(d[at]) << 24 | uint32_t(d[at + 1]) << 16 | uint32_t(d[at + 2]) << 8 | d[at + 3];
  }
  void expect_good(const Reply& r) {
    EXPECT_EQ(r.response, vs::kSOk);
    EXPECT_EQ(r.status, vs::kStatusGood);
    EXPECT_EQ(r.sense_len, 0u);
  }
  void expect_sense(const Reply& r, uint8_t key, uint8_t asc) {
    EXPECT_EQ(r.response, vs::kSOk);
    EXPECT_EQ(r.status, vs::kStatusCheckCondition);
    EXPECT_EQ(r.sense_len, 18u);
    ASSERT_EQ(r.sense.size(), 18u);
    EXPECT_EQ(r.sense[0], 0x70);  // fixed format, current
    EXPECT_EQ(r.key(), key);
    EXPECT_EQ(r.asc(), asc);
  }
  void expect_healthy() {
    Reply r = cmd({vs::op::kInquiry, 0, 0, 0, 36, 0}, 36);
    expect_good(r);
    EXPECT_EQ(r.data.size(), 36u);
    EXPECT_FALSE(g().status() & virtio::kStatusNeedsReset);
  }

  std::string path_;
  std::vector<std::string> cleanup_;
  std::unique_ptr<DeviceRig> rig_;
};

TEST_F(VirtioScsi, IsAScsiControllerWithOneTargetAndItsLuns) {
  std::string raw = make_raw("virtio_scsi_lun1", 1 << 20);
  cleanup_.push_back(raw);
  start({{raw, "raw", true, false, true}});
  EXPECT_EQ(rig_->drv.cfg_read(0, 4), 0x10481af4u);     // virtio 1.0 device 0x1040 + 8
  EXPECT_EQ(rig_->drv.cfg_read(8, 4) >> 8, 0x010000u);  // mass storage, SCSI
  uint64_t dev_cfg = g().bar() + 0x2000;
  auto cfg32 = [&](uint32_t off) { return uint32_t(rig_->drv.mmio_read(dev_cfg + off, 4)); };
  EXPECT_EQ(cfg32(vs::cfg::kNumQueues), 1u);
  EXPECT_EQ(cfg32(vs::cfg::kMaxSectors), 2048u);
  EXPECT_EQ(cfg32(vs::cfg::kSenseSize), 96u);
  EXPECT_EQ(cfg32(vs::cfg::kCdbSize), 32u);
  EXPECT_EQ(cfg32(vs::cfg::kMaxLun), 1u);
  EXPECT_EQ(rig_->drv.mmio_read(dev_cfg + vs::cfg::kMaxTarget, 2), 0u);

  Reply r = cmd({vs::op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 256);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 24u);
  EXPECT_EQ(be32(r.data, 0), 16u);
  EXPECT_EQ(r.data[9], 0);
  EXPECT_EQ(r.data[17], 1);
  EXPECT_EQ(r.resid, 256u - 24u);
}

TEST_F(VirtioScsi, InquiryAndVpdPagesCarryTheImagesLimits) {
  start();
  Reply r = cmd({vs::op::kInquiry, 0, 0, 0, 96, 0}, 96);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 36u);
  EXPECT_EQ(r.data[0], 0x00);  // direct access block device
  EXPECT_GE(r.data[2], 5);     // SPC-3 or later: Linux reads VPD pages
  EXPECT_EQ(std::string(r.data.begin() + 8, r.data.begin() + 16), "VMM     ");
  EXPECT_EQ(r.resid, 96u - 36u);

  r = cmd({vs::op::kInquiry, 1, 0x00, 0, 64, 0}, 64);
  expect_good(r);
  EXPECT_EQ(std::vector<uint8_t>(r.data.begin() + 4, r.data.end()),
            (std::vector<uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}));
  r = cmd({vs::op::kInquiry, 1, 0x80, 0, 64, 0}, 64);
  EXPECT_EQ(std::string(r.data.begin() + 4, r.data.end()), "vmm-scsi0");
  r = cmd({vs::op::kInquiry, 1, 0x83, 0, 255, 0}, 255);
  ASSERT_GE(r.data.size(), 16u);
  EXPECT_EQ(r.data[5], 0x03);    // first designator: NAA
  EXPECT_EQ(r.data[8] >> 4, 3);  // NAA 3: locally assigned
  r = cmd({vs::op::kInquiry, 1, 0xb0, 0, 64, 0}, 64);
  ASSERT_EQ(r.data.size(), 64u);
  EXPECT_EQ(be32(r.data, 8), 2048u);  // maximum transfer length
  EXPECT_EQ(be32(r.data, 28), 128u);  // unmap granularity: one 64 KiB cluster
  EXPECT_EQ(r.data[6] << 8 | r.data[7], 128);
  EXPECT_GT(be32(r.data, 20), 0u);  // maximum unmap LBA count
  r = cmd({vs::op::kInquiry, 1, 0xb1, 0, 64, 0}, 64);
  EXPECT_EQ(r.data[4] << 8 | r.data[5], 1);  // non-rotating
  r = cmd({vs::op::kInquiry, 1, 0xb2, 0, 64, 0}, 64);
  ASSERT_EQ(r.data.size(), 8u);
  EXPECT_TRUE(r.data[5] & 0x80);  // LBPU: UNMAP
  EXPECT_TRUE(r.data[5] & 0x40);  // LBPWS: WRITE SAME 16 with UNMAP

  // Truncated to the allocation length.
  r = cmd({vs::op::kInquiry, 0, 0, 0, 5, 0}, 64);
  EXPECT_EQ(r.data.size(), 5u);
}

TEST_F(VirtioScsi, ReadCapacityMatchesTheImage) {
  start();
  Reply r = cmd({vs::op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 8u);
  EXPECT_EQ(be32(r.data, 0), (64u << 20) / 512 - 1);
  EXPECT_EQ(be32(r.data, 4), 512u);
  r = cmd({vs::op::kServiceActionIn16, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, 32);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 32u);
  EXPECT_EQ(be32(r.data, 0), 0u);
  EXPECT_EQ(be32(r.data, 4), (64u << 20) / 512 - 1);
  EXPECT_EQ(be32(r.data, 8), 512u);
  EXPECT_TRUE(r.data[14] & 0x80);  // LBPME
}

TEST_F(VirtioScsi, WritesReadBackAndQemuImgSeesThem) {
  start();
  std::vector<uint8_t> data(8 * 512);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + 3);
  expect_good(cmd({vs::op::kWrite10, 0x08, 0, 0, 0, 100, 0, 0, 8, 0}, 0, data));  // FUA
  Reply r = cmd(rw16(vs::op::kRead16, 100, 8), 8 * 512);
  expect_good(r);
  EXPECT_EQ(r.data, data);
  EXPECT_EQ(r.resid, 0u);
  // WRITE 6 and READ 6, then SYNCHRONIZE CACHE.
  std::vector<uint8_t> d6(512, 0x5a);
  expect_good(cmd({vs::op::kWrite6, 0, 0, 3, 1, 0}, 0, d6));
  r = cmd({vs::op::kRead6, 0, 0, 3, 1, 0}, 512);
  EXPECT_EQ(r.data, d6);
  expect_good(cmd({vs::op::kSynchronizeCache10, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  stop();
  ASSERT_EQ(0, std::system(("qemu-img check -q " + path_).c_str()));
  std::string raw = path_ + ".raw";
  cleanup_.push_back(raw);
  ASSERT_EQ(0, std::system(("qemu-img convert -O raw " + path_ + " " + raw).c_str()));
  EXPECT_EQ(file_bytes(raw, 100 * 512, data.size()), data);
  EXPECT_EQ(file_bytes(raw, 3 * 512, 512), d6);
}

TEST_F(VirtioScsi, UnmapAndWriteSameReadZerosAndTheImageStaysClean) {
  start();
  std::vector<uint8_t> data(512 * 512, 0x77);  // 256 KiB: four clusters
  expect_good(cmd(rw16(vs::op::kWrite16, 0, 512), 0, data));
  // UNMAP one cluster (blocks 128..255) and half of another (384..447).
  std::vector<uint8_t> list(8 + 32, 0);
  list[1] = 38;
  list[3] = 32;
  list[8 + 7] = 128;
  list[8 + 11] = 128;
  list[24 + 6] = 1;  // lba 384
  list[24 + 7] = 128;
  list[24 + 11] = 64;
  expect_good(cmd({vs::op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 40, 0}, 0, list));
  Reply r = cmd(rw16(vs::op::kRead16, 0, 512), 512 * 512);
  expect_good(r);
  for (size_t b = 0; b < 512; ++b) {
    bool zero = (b >= 128 && b < 256) || (b >= 384 && b < 448);
    ASSERT_EQ(r.data[b * 512], zero ? 0 : 0x77) << "block " << b;
  }
  // WRITE SAME 16 with UNMAP over blocks 0..63 (zeros), and with a pattern over 448..511.
  expect_good(cmd(rw16(vs::op::kWriteSame16, 0, 64, 0x08), 0, std::vector<uint8_t>(512, 0)));
  expect_good(cmd(rw16(vs::op::kWriteSame16, 448, 64), 0, std::vector<uint8_t>(512, 0x31)));
  r = cmd(rw16(vs::op::kRead16, 0, 512), 512 * 512);
  EXPECT_EQ(r.data[0], 0);
  EXPECT_EQ(r.data[63 * 512 + 511], 0);
  EXPECT_EQ(r.data[64 * 512], 0x77);
  EXPECT_EQ(r.data[448 * 512], 0x31);
  EXPECT_EQ(r.data[511 * 512 + 511], 0x31);
  stop();
  EXPECT_EQ(0, std::system(("qemu-img check -q " + path_).c_str()));
  std::string raw = path_ + ".raw";
  cleanup_.push_back(raw);
  ASSERT_EQ(0, std::system(("qemu-img convert -O raw " + path_ + " " + raw).c_str()));
  EXPECT_EQ(file_bytes(raw, 128 * 512, 128 * 512), std::vector<uint8_t>(128 * 512, 0));
  EXPECT_EQ(file_bytes(raw, 448 * 512, 512), std::vector<uint8_t>(512, 0x31));
}

TEST_F(VirtioScsi, ModeSenseCachingPageFollowsTheCacheMode) {
  std::string wt = temp_path("virtio_scsi_wt.raw");
  cleanup_.push_back(wt);
  ASSERT_EQ(0, std::system(("truncate -s 1M " + wt).c_str()));
  start({{wt, "raw", false, false, /*write_cache=*/false}});
  // MODE SENSE 6, caching page, with the block descriptor.
  Reply r = cmd({vs::op::kModeSense6, 0, 0x08, 0, 255, 0}, 255);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 4u + 8u + 20u);
  EXPECT_EQ(r.data[0], r.data.size() - 1);
  EXPECT_EQ(r.data[3], 8);  // block descriptor length
  EXPECT_EQ(be32(r.data, 4), (64u << 20) / 512);
  EXPECT_EQ(r.data[12], 0x08);
  EXPECT_TRUE(r.data[14] & 0x04);  // WCE: writeback
  EXPECT_TRUE(r.data[2] & 0x10);   // DPOFUA
  // DBD: no block descriptor; LUN 1 is writethrough.
  r = cmd({vs::op::kModeSense10, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0}, 255, {}, lun_addr(1));
  expect_good(r);
  ASSERT_EQ(r.data.size(), 8u + 20u);
  EXPECT_EQ(r.data[7], 0);
  EXPECT_FALSE(r.data[10] & 0x04);
  // All pages: caching and control.
  r = cmd({vs::op::kModeSense6, 0x08, 0x3f, 0, 255, 0}, 255);
  ASSERT_EQ(r.data.size(), 4u + 20u + 12u);
  EXPECT_EQ(r.data[24], 0x0a);
  // Saved values are not supported; an unknown page is an invalid field.
  expect_sense(cmd({vs::op::kModeSense6, 0, 0xc8, 0, 255, 0}, 255), vs::kKeyIllegalRequest,
               vs::kAscSavingParamsUnsupported);
  expect_sense(cmd({vs::op::kModeSense6, 0, 0x19, 0, 255, 0}, 255), vs::kKeyIllegalRequest,
               vs::kAscInvalidFieldInCdb);
}

TEST_F(VirtioScsi, SenseDataForEachErrorClass) {
  std::string ro = make_raw("virtio_scsi_ro", 1 << 20);
  cleanup_.push_back(ro);
  start({{ro, "raw", /*read_only=*/true, false, true}});
  // Unknown opcode (VERIFY 10) and a reserved group.
  expect_sense(cmd({0x2f, 0, 0, 0, 0, 0, 0, 0, 1, 0}), vs::kKeyIllegalRequest,
               vs::kAscInvalidOpcode);
  expect_sense(cmd({0xe0, 0, 0, 0, 0, 0}), vs::kKeyIllegalRequest, vs::kAscInvalidOpcode);
  // An unsupported VPD page: INVALID FIELD IN CDB pointing at byte 2.
  Reply r = cmd({vs::op::kInquiry, 1, 0x99, 0, 64, 0}, 64);
  expect_sense(r, vs::kKeyIllegalRequest, vs::kAscInvalidFieldInCdb);
  EXPECT_EQ(r.sense[15], 0xc0);
  EXPECT_EQ(r.sense[17], 2);
  // Past the end, and a range that wraps around 2^64.
  expect_sense(cmd(rw16(vs::op::kRead16, (64u << 20) / 512, 1), 512), vs::kKeyIllegalRequest,
               vs::kAscLbaOutOfRange);
  expect_sense(cmd(rw16(vs::op::kRead16, ~0ull, 2), 1024), vs::kKeyIllegalRequest,
               vs::kAscLbaOutOfRange);
  // More than the maximum transfer length.
  expect_sense(cmd(rw16(vs::op::kRead16, 0, 4096), 4096 * 512), vs::kKeyIllegalRequest,
               vs::kAscInvalidFieldInCdb);
  // The read-only LUN: writes, UNMAP and WRITE SAME are write protected; reads work.
  expect_sense(cmd(rw16(vs::op::kWrite16, 0, 1), 0, std::vector<uint8_t>(512, 1), lun_addr(1)),
               vs::kKeyDataProtect, vs::kAscWriteProtected);
  expect_sense(
      cmd({vs::op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 0, std::vector<uint8_t>(24), lun_addr(1)),
      vs::kKeyDataProtect, vs::kAscWriteProtected);
  r = cmd(rw16(vs::op::kRead16, 1, 1), 512, {}, lun_addr(1));
  expect_good(r);
  EXPECT_EQ(r.data, file_bytes(ro, 512, 512));
  EXPECT_EQ(file_bytes(ro, 0, 1)[0], pattern(0));
  // REQUEST SENSE: autosense leaves nothing pending.
  r = cmd({vs::op::kRequestSense, 0, 0, 0, 18, 0}, 18);
  expect_good(r);
  ASSERT_EQ(r.data.size(), 18u);
  EXPECT_EQ(r.data[2] & 0xf, vs::kKeyNoSense);
  // A LUN or target that does not exist: BAD_TARGET, no SCSI status.
  EXPECT_EQ(cmd({0, 0, 0, 0, 0, 0}, 0, {}, lun_addr(2)).response, vs::kSBadTarget);
  EXPECT_EQ(cmd({0, 0, 0, 0, 0, 0}, 0, {}, lun_addr(0, 1)).response, vs::kSBadTarget);
  EXPECT_EQ(cmd({0, 0, 0, 0, 0, 0}, 0, {}, {2, 0, 0x40, 0, 0, 0, 0, 0}).response, vs::kSBadTarget);
  expect_good(cmd({vs::op::kTestUnitReady, 0, 0, 0, 0, 0}));
  expect_good(cmd({vs::op::kStartStopUnit, 0, 0, 0, 1, 0}));
}

TEST_F(VirtioScsi, AnIoErrorIsAMediumError) {
  auto loop = img::IoLoop::create({});
  ASSERT_TRUE(loop);
  auto file = std::make_unique<img::FaultFile>(loop->get(), "fault.raw");
  img::FaultFile* f = file.get();
  ASSERT_TRUE((*loop)->run(f->truncate(1 << 20)));
  auto disk = (*loop)->run(img::open_image_file(**loop, std::move(file), {.format = "raw"}));
  ASSERT_TRUE(disk) << disk.error().to_string();
  std::vector<vs::ScsiLun> luns(1);
  luns[0].disk = std::move(*disk);
  luns[0].serial = "fault";
  f->fail_reads(0, 1000);
  start_with(vs::ScsiDevice::create(std::move(*loop), std::move(luns)));
  Reply r = cmd(rw16(vs::op::kRead16, 0, 8), 4096);
  expect_sense(r, vs::kKeyMediumError, vs::kAscUnrecoveredReadError);
  expect_healthy();
}

TEST_F(VirtioScsi, HostileChainsAreRefusedWithoutTouchingOtherMemory) {
  start();
  // A request header shorter than 19 + cdb_size bytes, and a response area too short: used 0.
  std::memset(ram().at(kReq), 0, 64);
  EXPECT_EQ(post(kReqQ, {{kReq, 20, false}, {kResp, 108, true}}), 0u);
  EXPECT_EQ(post(kReqQ, {{kReq, 51, false}, {kResp, 50, true}}), 0u);
  EXPECT_EQ(post(kReqQ, {{kResp, 108, true}}), 0u);
  // A READ claiming 2048 blocks with a 4 KiB buffer: OVERRUN before any I/O, and nothing past
  // the buffer is written.
  Reply r = cmd(rw16(vs::op::kRead16, 0, 2048), 4096);
  EXPECT_EQ(r.response, vs::kSOverrun);
  EXPECT_EQ(ram().get<uint8_t>(kIn + 4096), 0xee);
  // A WRITE claiming more than its data-out holds.
  EXPECT_EQ(cmd(rw16(vs::op::kWrite16, 0, 16), 0, std::vector<uint8_t>(512, 1)).response,
            vs::kSOverrun);
  // Data the wrong way: a READ with data-out buffers, a WRITE with data-in buffers.
  EXPECT_EQ(cmd(rw16(vs::op::kRead16, 0, 1), 0, std::vector<uint8_t>(512)).response, vs::kSFailure);
  EXPECT_EQ(cmd(rw16(vs::op::kWrite16, 0, 1), 512).response, vs::kSFailure);
  // A header split across descriptors works (§2.7.4).
  std::vector<uint8_t> h(51, 0);
  std::vector<uint8_t> l = lun_addr(0);
  std::copy(l.begin(), l.end(), h.begin());
  h[19] = vs::op::kInquiry;
  h[23] = 36;
  std::memcpy(ram().at(kReq), h.data(), 10);
  std::memcpy(ram().at(kReq + 0x100), h.data() + 10, 41);
  uint32_t used = post(kReqQ, {{kReq, 10, false},
                               {kReq + 0x100, 41, false},
                               {kResp, 60, true},
                               {kResp + 0x100, 48, true},
                               {kIn, 36, true}});
  EXPECT_EQ(used, 108u + 36u);
  EXPECT_EQ(ram().get<uint8_t>(kResp + 11), vs::kSOk);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(ram().at(kIn + 8)), 3), "VMM");
  // An UNMAP list that claims more descriptors than it holds, or ranges past the end.
  std::vector<uint8_t> list(24, 0);
  list[3] = 64;
  expect_sense(cmd({vs::op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 0, list), vs::kKeyIllegalRequest,
               vs::kAscInvalidFieldInParamList);
  list[3] = 16;
  for (int i = 0; i < 8; ++i) list[8 + i] = 0xff;
  list[8 + 11] = 1;
  expect_sense(cmd({vs::op::kUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, 0, list), vs::kKeyIllegalRequest,
               vs::kAscLbaOutOfRange);
  expect_healthy();
}

TEST_F(VirtioScsi, TaskManagementAnswersHonestly) {
  start();
  auto tmf = [&](uint32_t subtype, std::vector<uint8_t> lun) {
    std::vector<uint8_t> req(24, 0);
    std::memcpy(&req[4], &subtype, 4);
    std::copy(lun.begin(), lun.end(), req.begin() + 8);
    req[16] = 0x2a;
    std::memcpy(ram().at(kReq), req.data(), req.size());
    ram().put<uint8_t>(kResp, 0xee);
    EXPECT_EQ(post(vs::kControlQueue, {{kReq, 24, false}, {kResp, 1, true}}), 1u);
    return ram().get<uint8_t>(kResp);
  };
  // Nothing in flight: the abort is complete, the query finds no task.
  EXPECT_EQ(tmf(vs::kTmfAbortTask, lun_addr(0)), vs::kSFunctionComplete);
  EXPECT_EQ(tmf(vs::kTmfLogicalUnitReset, lun_addr(0)), vs::kSFunctionComplete);
  EXPECT_EQ(tmf(vs::kTmfQueryTask, lun_addr(0)), vs::kSFunctionComplete);
  EXPECT_EQ(tmf(vs::kTmfClearAca, lun_addr(0)), vs::kSFunctionRejected);
  EXPECT_EQ(tmf(99, lun_addr(0)), vs::kSFunctionRejected);
  EXPECT_EQ(tmf(vs::kTmfAbortTask, lun_addr(7)), vs::kSBadTarget);
  // An AN query: no events supported.
  std::vector<uint8_t> an(16, 0);
  an[0] = vs::kTAnQuery;
  std::vector<uint8_t> l = lun_addr(0);
  std::copy(l.begin(), l.end(), an.begin() + 4);
  an[12] = 0x7e;
  std::memcpy(ram().at(kReq), an.data(), an.size());
  std::memset(ram().at(kResp), 0xee, 8);
  EXPECT_EQ(post(vs::kControlQueue, {{kReq, 16, false}, {kResp, 5, true}}), 5u);
  EXPECT_EQ(ram().get<uint32_t>(kResp), 0u);
  EXPECT_EQ(ram().get<uint8_t>(kResp + 4), vs::kSOk);
  // An unknown control type, or a TMF without room for its response: used length 0.
  ram().put<uint32_t>(kReq, 9);
  EXPECT_EQ(post(vs::kControlQueue, {{kReq, 24, false}, {kResp, 1, true}}), 0u);
  ram().put<uint32_t>(kReq, vs::kTTmf);
  EXPECT_EQ(post(vs::kControlQueue, {{kReq, 24, false}}), 0u);
  // Event buffers are held (no events), and the request queue keeps working meanwhile.
  uint16_t before = g().used_idx(vs::kEventQueue);
  g().make_available(vs::kEventQueue,
                     g().write_chain(vs::kEventQueue, {{kResp + 0x800, 16, true}}));
  g().notify(vs::kEventQueue);
  expect_healthy();
  EXPECT_EQ(g().used_idx(vs::kEventQueue), before);
  rig_->reset();  // a reset with the event buffer parked returns at once
  EXPECT_EQ(g().status(), 0);
}

}  // namespace
}  // namespace vmm::testing

namespace vmm::testing {
namespace {

// A LUN grown under a running driver (block_resize with "lun"): the image grows, READ CAPACITY
// says so, the LUN reports CAPACITY DATA HAS CHANGED once (not to INQUIRY), and with CHANGE
// negotiated a PARAM_CHANGE event reaches the driver, at once or when it next posts an event
// buffer. Shrinks, odd sizes and unknown LUNs are refused and change nothing.
struct VirtioScsiResize : VirtioScsi {
  img::Status resize(size_t lun, uint64_t bytes) {
    auto* pci = static_cast<virtio::VirtioPciDevice*>(rig_->dev.get());
    return pci->with_device([&](virtio::VirtioDevice& d) {
      return static_cast<vs::ScsiDevice&>(d).resize(lun, bytes);
    });
  }
  uint16_t post_event_buffer(uint64_t at) {
    std::memset(ram().at(at), 0xee, 16);
    uint16_t before = g().used_idx(vs::kEventQueue);
    g().make_available(vs::kEventQueue, g().write_chain(vs::kEventQueue, {{at, 16, true}}));
    g().notify(vs::kEventQueue);
    return before;
  }
  void expect_param_change(uint64_t at, uint16_t before) {
    ASSERT_TRUE(wait_for([&] { return g().used_idx(vs::kEventQueue) != before; })) << "no event";
    EXPECT_EQ(g().used_elem(vs::kEventQueue, before).second, 16u);
    EXPECT_EQ(ram().get<uint32_t>(at), 3u);  // VIRTIO_SCSI_T_PARAM_CHANGE
    std::vector<uint8_t> lun(ram().at(at + 4), ram().at(at + 12));
    EXPECT_EQ(lun, lun_addr(0));
    EXPECT_EQ(ram().get<uint32_t>(at + 12), 0x092au);  // ASC 2Ah, ASCQ 09h
  }
  uint32_t last_lba() {
    Reply r = cmd({vs::op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8);
    expect_good(r);
    return r.data.size() == 8 ? be32(r.data, 0) : 0;
  }
};

TEST_F(VirtioScsiResize, TheDriverHearsOfTheNewCapacityOnceAndCanUseIt) {
  start();
  EXPECT_TRUE(g().features() & vs::kFChange);
  uint16_t before = post_event_buffer(kResp + 0x800);
  ASSERT_TRUE(resize(0, 96u << 20));
  expect_param_change(kResp + 0x800, before);
  // INQUIRY does not take the unit attention; the next other command does, once.
  expect_good(cmd({vs::op::kInquiry, 0, 0, 0, 36, 0}, 36));
  Reply ua = cmd({vs::op::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8);
  expect_sense(ua, vs::kKeyUnitAttention, 0x2a);
  EXPECT_EQ(ua.sense[13], 0x09);  // CAPACITY DATA HAS CHANGED
  EXPECT_EQ(last_lba(), (96u << 20) / 512 - 1);
  // The new blocks are there to write and read back.
  std::vector<uint8_t> block(512, 0x5a);
  expect_good(cmd(rw16(vs::op::kWrite16, (80u << 20) / 512, 1), 0, block));
  Reply rd = cmd(rw16(vs::op::kRead16, (80u << 20) / 512, 1), 512);
  expect_good(rd);
  EXPECT_EQ(rd.data, block);

  // No event buffer posted: the event waits for one; the unit attention is there meanwhile.
  ASSERT_TRUE(resize(0, 128u << 20));
  expect_sense(cmd(rw16(vs::op::kRead16, 0, 1), 512), vs::kKeyUnitAttention, 0x2a);
  EXPECT_EQ(last_lba(), (128u << 20) / 512 - 1);
  before = post_event_buffer(kResp + 0x900);
  expect_param_change(kResp + 0x900, before);

  auto shrink = resize(0, 64u << 20);
  ASSERT_FALSE(shrink);
  EXPECT_NE(shrink.error().message().find("only growing is supported"), std::string::npos);
  EXPECT_FALSE(resize(0, (128u << 20) + 100));
  EXPECT_EQ(resize(3, 256u << 20).error().message(), "no LUN 3 (there are 1)");
  expect_good(cmd(rw16(vs::op::kRead16, 0, 1), 512));  // no new unit attention
  EXPECT_EQ(last_lba(), (128u << 20) / 512 - 1);
  expect_healthy();
  stop();
  std::string info;
  FILE* f = popen(("qemu-img info --output=json " + path_ + " 2>&1").c_str(), "r");
  char buf[4096];
  for (size_t n; f && (n = fread(buf, 1, sizeof buf, f)) > 0;) info.append(buf, n);
  if (f) pclose(f);
  EXPECT_NE(info.find("\"virtual-size\": 134217728"), std::string::npos) << info;
}

}  // namespace
}  // namespace vmm::testing
