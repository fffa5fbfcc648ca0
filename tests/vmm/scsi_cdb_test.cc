// The virtio-scsi CDB decoder on its own (virtio/scsi/cdb.h): SBC-3 corner cases the device
// tests do not reach through a guest: READ 6's zero length, NACA, WRITE SAME's zero length,
// REPORT LUNS' minimum allocation, READ CAPACITY 10 saturating above 2 TiB, UNMAP lists.
#include <gtest/gtest.h>

#include "virtio/scsi/cdb.h"
#include "virtio/scsi/request.h"
#include "virtio/scsi/scsi_spec.h"

namespace vmm::virtio::scsi {
namespace {

using K = Command::Kind;

LunInfo lun(uint64_t blocks = 1 << 20) {
  LunInfo i;
  i.blocks = blocks;
  i.luns = {0};
  i.serial = "s";
  return i;
}
std::vector<uint8_t> cdb(std::initializer_list<uint8_t> b) {
  std::vector<uint8_t> v(b);
  v.resize(32, 0);
  return v;
}

TEST(ScsiCdb, Read6LengthZeroMeans256Blocks) {
  Command c = decode_cdb(cdb({op::kRead6, 0x01, 0x02, 0x03, 0, 0}), 0, lun());
  ASSERT_EQ(c.kind, K::kRead);
  EXPECT_EQ(c.lba, 0x010203u);
  EXPECT_EQ(c.blocks, 256u);
  EXPECT_EQ(c.data_in(), 256u * 512);
}

TEST(ScsiCdb, ZeroLengthTransfersAreGoodButStillRangeChecked) {
  Command c = decode_cdb(cdb({op::kRead10, 0, 0, 0, 0, 5, 0, 0, 0, 0}), 0, lun(10));
  EXPECT_EQ(c.kind, K::kRead);
  EXPECT_EQ(c.data_in(), 0u);
  c = decode_cdb(cdb({op::kRead10, 0, 0, 0, 0, 11, 0, 0, 0, 0}), 0, lun(10));
  EXPECT_EQ(c.kind, K::kError);
  EXPECT_EQ(c.sense.asc, kAscLbaOutOfRange);
}

TEST(ScsiCdb, NacaAndProtectionFieldsAreInvalidFields) {
  Command c = decode_cdb(cdb({op::kTestUnitReady, 0, 0, 0, 0, 0x04}), 0, lun());
  ASSERT_EQ(c.kind, K::kError);
  EXPECT_EQ(c.sense, (Sense{kKeyIllegalRequest, kAscInvalidFieldInCdb, 0, 5}));
  c = decode_cdb(cdb({op::kRead10, 0x20, 0, 0, 0, 0, 0, 0, 1, 0}), 0, lun());
  EXPECT_EQ(c.sense, (Sense{kKeyIllegalRequest, kAscInvalidFieldInCdb, 0, 1}));
}

TEST(ScsiCdb, WriteSameRefusesZeroBlocksAsWsnzSays) {
  Command c = decode_cdb(cdb({op::kWriteSame10, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}), 0, lun());
  EXPECT_EQ(c.kind, K::kError);
  c = decode_cdb(cdb({op::kWriteSame16, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}), 0, lun());
  ASSERT_EQ(c.kind, K::kWriteSame);
  EXPECT_TRUE(c.unmap);
  EXPECT_TRUE(c.ndob);
  EXPECT_EQ(c.data_out, 0u);  // NDOB: no data-out buffer
}

TEST(ScsiCdb, ReportLunsNeedsSixteenBytes) {
  Command c = decode_cdb(cdb({op::kReportLuns, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0}), 0, lun());
  EXPECT_EQ(c.kind, K::kError);
  EXPECT_EQ(c.sense.field, 6);
}

TEST(ScsiCdb, ReadCapacity10SaturatesAbove2TiB) {
  Command c = decode_cdb(cdb({op::kReadCapacity10}), 0, lun(uint64_t{1} << 33));
  ASSERT_EQ(c.kind, K::kReply);
  EXPECT_EQ(c.reply, (std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0}));
}

TEST(ScsiCdb, UnmapListsAreCheckedBeforeUse) {
  LunInfo i = lun(900);
  EXPECT_EQ(parse_unmap_list(std::vector<uint8_t>(4), i).error().asc, kAscParameterListLength);
  std::vector<uint8_t> l(8 + 16, 0);
  l[3] = 16;
  l[8 + 6] = 3;  // lba 0x300 = 768
  l[8 + 11] = 200;
  ASSERT_FALSE(parse_unmap_list(l, i));
  EXPECT_EQ(parse_unmap_list(l, i).error().asc, kAscLbaOutOfRange);
  l[8 + 11] = 100;
  auto r = parse_unmap_list(l, i);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].lba, 768u);
  EXPECT_EQ((*r)[0].blocks, 100u);
}

TEST(ScsiCdb, FixedSenseLayout) {
  auto s = fixed_sense({kKeyIllegalRequest, kAscInvalidFieldInCdb, 0, 300});
  ASSERT_EQ(s.size(), 18u);
  EXPECT_EQ(s[0], 0x70);
  EXPECT_EQ(s[2], kKeyIllegalRequest);
  EXPECT_EQ(s[7], 10);
  EXPECT_EQ(s[12], kAscInvalidFieldInCdb);
  EXPECT_EQ(s[15], 0xc0);
  EXPECT_EQ(s[16] << 8 | s[17], 300);
}

}  // namespace

// Regression (virtio_scsi_request_fuzz, UBSan): a response without sense data copied 0 bytes
// from the empty span's null data(). The sense area is zeroed and the header is the whole reply.
TEST(ScsiCmdResp, NoSenseDataIsAZeroedSenseArea) {
  std::vector<uint8_t> r = vmm::virtio::scsi::encode_cmd_resp(0, 0, 7, {}, 96);
  ASSERT_EQ(r.size(), vmm::virtio::scsi::kCmdRespHeader + 96);
  EXPECT_EQ(r[0], 0);  // sense_len
  EXPECT_EQ(r[4], 7);  // resid
  for (size_t i = vmm::virtio::scsi::kCmdRespHeader; i < r.size(); ++i) EXPECT_EQ(r[i], 0) << i;
}

}  // namespace vmm::virtio::scsi
