// The NBD wire codec (libimg/src/nbd/proto.h): decoders refuse lengths that disagree with their
// data, and check_request sorts requests the way proto.md "Request types" says.
#include "nbd/proto.h"

#include <gtest/gtest.h>

#include "test_client.h"

namespace {

using namespace img::nbd;

TEST(NbdProto, InfoRequestDecodes) {
  Bytes d = nbdtest::go_data("disk");
  d.pop_back();
  d.pop_back();
  nbdtest::put16(d, 2);
  nbdtest::put16(d, kInfoName);
  nbdtest::put16(d, kInfoBlockSize);
  auto r = decode_info_request(d);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->name, "disk");
  EXPECT_EQ(r->infos, (std::vector<uint16_t>{kInfoName, kInfoBlockSize}));
  d.pop_back();  // the last info type cut short
  EXPECT_FALSE(decode_info_request(d));
}

TEST(NbdProto, InfoRequestRefusesLongOrNulNames) {
  Bytes d;
  nbdtest::put32(d, kMaxString + 1);
  d.resize(d.size() + kMaxString + 1, 'a');
  nbdtest::put16(d, 0);
  EXPECT_FALSE(decode_info_request(d));
  EXPECT_FALSE(decode_info_request(nbdtest::go_data(std::string("a\0b", 3))));
}

TEST(NbdProto, MetaContextRequestBounds) {
  auto ok = decode_meta_context_request(nbdtest::meta_data("x", {"base:allocation", "qemu:"}));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->queries.size(), 2u);
  // A count of queries the data cannot hold, trailing bytes, and more queries than we take.
  Bytes lie = nbdtest::meta_data("x", {});
  lie[lie.size() - 1] = 100;
  EXPECT_FALSE(decode_meta_context_request(lie));
  Bytes trail = nbdtest::meta_data("x", {"a"});
  trail.push_back(0);
  EXPECT_FALSE(decode_meta_context_request(trail));
  std::vector<std::string> many(kMaxMetaQueries + 1, "q");
  EXPECT_FALSE(decode_meta_context_request(nbdtest::meta_data("x", many)));
}

TEST(NbdProto, CheckRequest) {
  ExportLimits rw{1 << 20, uint16_t(kTxHasFlags | kTxSendFua | kTxSendFastZero), true, true};
  ExportLimits ro = rw;
  ro.tx_flags |= kTxReadOnly;
  auto req = [](uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
    return Request{kRequestMagic, flags, type, 1, off, len};
  };
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096), rw).verdict, Verdict::kOk);
  EXPECT_EQ(check_request(req(kCmdRead, (1 << 20) - 1, 1), rw).verdict, Verdict::kOk);
  EXPECT_EQ(check_request(req(kCmdRead, 1 << 20, 0), rw).verdict, Verdict::kOk);
  EXPECT_EQ(check_request(req(kCmdRead, 1 << 20, 1), rw).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, kMaxPayload + 1), rw).verdict, Verdict::kDisconnect);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 512), ro).error, kEperm);
  EXPECT_EQ(check_request(req(kCmdWriteZeroes, 0, 512, kCmdFlagFastZero), rw).verdict,
            Verdict::kOk);
  ExportLimits no_fast = rw;
  no_fast.tx_flags &= ~kTxSendFastZero;
  EXPECT_EQ(check_request(req(kCmdWriteZeroes, 0, 512, kCmdFlagFastZero), no_fast).error,
            kEinval);
  // A trim may cover more than one payload's worth: it carries no data.
  ExportLimits big = rw;
  big.size = 1ull << 40;
  EXPECT_EQ(check_request(req(kCmdTrim, 0, 0xffffffffu), big).verdict, Verdict::kOk);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 512, kCmdFlagDf), rw).verdict, Verdict::kOk);
  ExportLimits simple = rw;
  simple.structured = false;
  EXPECT_EQ(check_request(req(kCmdRead, 0, 512, kCmdFlagDf), simple).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, kMaxPayload + 1), simple).error, kEinval);
  Request bad = req(kCmdFlush, 0, 0);
  bad.magic = 0x25609514;
  EXPECT_EQ(check_request(bad, rw).verdict, Verdict::kDisconnect);
}

TEST(NbdProto, RequestRoundTrips) {
  Request r{kRequestMagic, kCmdFlagFua, kCmdWrite, 0x1122334455667788, 0x99, 4096};
  uint8_t b[kRequestSize];
  encode_request(r, b);
  Request d = decode_request(b);
  EXPECT_EQ(d.cookie, r.cookie);
  EXPECT_EQ(d.offset, r.offset);
  EXPECT_EQ(d.length, r.length);
  EXPECT_EQ(d.flags, r.flags);
  EXPECT_EQ(d.type, r.type);
}

}  // namespace
