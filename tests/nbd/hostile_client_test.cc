// Hostile clients against a session (libimg/src/nbd): each test sends what a broken or
// malicious client would and checks the server answers with the error the spec names, or hangs
// up, and never allocates or does I/O for what it was told (a 4 GiB write claim is not read).
#include <gtest/gtest.h>

#include <set>

#include "test_client.h"

namespace {

using namespace img::nbd;
using nbdtest::Bytes;
using nbdtest::option;
using nbdtest::request;

constexpr uint64_t kSize = 1 << 20;

// Reads a simple reply and returns its error value.
std::optional<uint32_t> simple_error(nbdtest::Client& c) {
  auto r = c.recv(kSimpleReplySize);
  if (!r || img::load_be32(r->data()) != kSimpleReplyMagic) return std::nullopt;
  return img::load_be32(r->data() + 4);
}

// Reads one structured chunk: (type, flags, payload).
struct Chunk {
  uint16_t flags, type;
  uint64_t cookie;
  Bytes data;
};
std::optional<Chunk> chunk(nbdtest::Client& c) {
  auto h = c.recv(kChunkHeaderSize);
  if (!h || img::load_be32(h->data()) != kStructuredReplyMagic) return std::nullopt;
  Chunk k{img::load_be16(h->data() + 4), img::load_be16(h->data() + 6),
          img::load_be64(h->data() + 8), {}};
  auto d = c.recv(img::load_be32(h->data() + 16));
  if (!d) return std::nullopt;
  k.data = *d;
  return k;
}

TEST(NbdHostile, UnknownClientFlagsHangUp) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->recv(18));
  c[0]->send({0x80, 0, 0, 1});
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_NE(e.result(0).find("unknown bits"), std::string::npos) << e.result(0);
}

TEST(NbdHostile, GarbageOptionMagicHangsUp) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->recv(18));
  c[0]->send({0, 0, 0, 3});
  c[0]->send(Bytes(16, 0x41));
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_EQ(e.result(0), "bad option magic");
}

TEST(NbdHostile, HugeOptionLengthIsNotRead) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->recv(18));
  c[0]->send({0, 0, 0, 3});
  Bytes h;
  nbdtest::put64(h, kOptMagic);
  nbdtest::put32(h, kOptGo);
  nbdtest::put32(h, 0xffffffffu);  // claims 4 GiB of option data
  c[0]->send(h);
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_NE(e.result(0).find("4294967295 bytes"), std::string::npos) << e.result(0);
}

TEST(NbdHostile, UnknownOptionsAreRefusedAndHagglingGoesOn) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->recv(18));
  c[0]->send({0, 0, 0, 3});
  c[0]->send(option(0x7777, {1, 2, 3}));
  auto r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepErrUnsup);
  // A GO whose name length runs past its data, and one for an export that is not there.
  c[0]->send(option(kOptGo, {0, 0, 0, 200, 'x'}));
  r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepErrInvalid);
  c[0]->send(option(kOptGo, nbdtest::go_data("nope")));
  r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepErrUnknown);
  // SET_META_CONTEXT before structured replies, and a query count the data cannot hold.
  c[0]->send(option(kOptSetMetaContext, nbdtest::meta_data("", {"base:allocation"})));
  r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepErrInvalid);
  c[0]->send(option(kOptListMetaContext, {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}));
  r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepErrInvalid);
  // Still a working server.
  c[0]->send(option(kOptAbort, {}));
  r = c[0]->option_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, kRepAck);
  e.join();
  EXPECT_EQ(e.result(0), "");
}

TEST(NbdHostile, EndlessOptionHagglingIsCut) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->recv(18));
  c[0]->send({0, 0, 0, 3});
  unsigned answered = 0;
  for (unsigned i = 0; i < kMaxOptions + 10; ++i) {
    if (!c[0]->send(option(kOptList, {}))) break;
    auto a = c[0]->option_reply();  // NBD_REP_SERVER
    auto b = c[0]->option_reply();  // ACK
    if (!a || !b) break;
    ++answered;
  }
  EXPECT_EQ(answered, kMaxOptions);
  e.join();
  EXPECT_NE(e.result(0).find("more than 1024 options"), std::string::npos) << e.result(0);
}

TEST(NbdHostile, FourGigabyteWriteClaimHangsUpWithoutReading) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->handshake());
  c[0]->send(request(kCmdWrite, 0, 0xffffffffu));
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_NE(e.result(0).find("larger than the 32 MiB maximum"), std::string::npos);
}

TEST(NbdHostile, BadRequestsGetErrorsAndTheConnectionGoesOn) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->handshake());
  struct Case {
    Bytes req;
    uint32_t want;
  } cases[] = {
      {request(kCmdRead, 0, 64u << 20, 1), kEoverflow},         // over the maximum block size
      {request(kCmdRead, kSize - 10, 11, 2), kEinval},          // one byte past the end
      {request(kCmdRead, UINT64_MAX - 1, 4096, 3), kEinval},    // offset + length wraps
      {request(kCmdTrim, kSize + 4096, 1, 4), kEinval},         // entirely past the end
      {request(99, 0, 0, 5), kEinval},                          // unknown command
      {request(kCmdRead, 0, 512, 6, 0x8000), kEinval},          // unknown flag
      {request(kCmdBlockStatus, 0, 0, 7), kEinval},             // zero-length block status
      {request(kCmdWriteZeroes, 0, 512, 8, kCmdFlagReqOne), kEinval},  // flag of another command
  };
  for (const auto& k : cases) {
    c[0]->send(k.req);
    auto ch = chunk(*c[0]);
    ASSERT_TRUE(ch);
    EXPECT_EQ(ch->type, kReplyError);
    EXPECT_EQ(ch->cookie, img::load_be64(k.req.data() + 8));
    ASSERT_GE(ch->data.size(), 4u);
    EXPECT_EQ(img::load_be32(ch->data.data()), k.want) << "cookie " << ch->cookie;
  }
  // A write past the end: its payload is read (and dropped), so the next request still parses.
  Bytes w = request(kCmdWrite, kSize - 100, 200, 9);
  w.resize(w.size() + 200, 0xaa);
  c[0]->send(w);
  auto ch = chunk(*c[0]);
  ASSERT_TRUE(ch);
  EXPECT_EQ(img::load_be32(ch->data.data()), kEinval);
  c[0]->send(request(kCmdRead, 4096, 16, 10));
  ch = chunk(*c[0]);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->type, kReplyOffsetData);
  EXPECT_EQ(ch->data[8], static_cast<uint8_t>(4096 * 7 + 1));
  c[0]->send(request(kCmdDisc, 0, 0));
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_EQ(e.result(0), "");
  // Nothing was written by any of it.
  EXPECT_EQ(e.file().bytes()[kSize - 1], static_cast<uint8_t>((kSize - 1) * 7 + 1));
}

TEST(NbdHostile, GarbageRequestMagicHangsUp) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->handshake());
  c[0]->send(Bytes(28, 0x5a));
  EXPECT_TRUE(c[0]->closed());
  e.join();
  EXPECT_EQ(e.result(0), "bad request magic");
}

TEST(NbdHostile, WritesToReadOnlyExportGetEperm) {
  nbdtest::ServedExport e(kSize, /*read_only=*/true);
  auto c = e.start();
  ASSERT_TRUE(c[0]->handshake(/*structured=*/false));
  Bytes w = request(kCmdWrite, 0, 512, 1);
  w.resize(w.size() + 512, 0);
  c[0]->send(w);
  EXPECT_EQ(simple_error(*c[0]), kEperm);
  c[0]->send(request(kCmdTrim, 0, 512, 2));
  EXPECT_EQ(simple_error(*c[0]), kEperm);
  // Without structured replies no metadata context can exist: block status is refused.
  c[0]->send(request(kCmdBlockStatus, 0, 512, 3));
  EXPECT_EQ(simple_error(*c[0]), kEinval);
  c[0]->send(request(kCmdDisc, 0, 0));
  e.join();
  EXPECT_EQ(e.file().bytes()[0], 1);
}

// 64 requests sent before any reply is read are all answered, each under its own cookie.
TEST(NbdSession, ManyRequestsInFlight) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start();
  ASSERT_TRUE(c[0]->handshake(/*structured=*/false));
  Bytes all;
  for (uint64_t i = 0; i < 64; ++i) {
    Bytes r = request(kCmdRead, i * 4096, 4096, 1000 + i);
    all.insert(all.end(), r.begin(), r.end());
  }
  c[0]->send(all);
  std::set<uint64_t> cookies;
  for (int i = 0; i < 64; ++i) {
    auto h = c[0]->recv(kSimpleReplySize);
    ASSERT_TRUE(h);
    uint64_t cookie = img::load_be64(h->data() + 8);
    auto d = c[0]->recv(4096);
    ASSERT_TRUE(d);
    uint64_t off = (cookie - 1000) * 4096;
    EXPECT_EQ((*d)[0], static_cast<uint8_t>(off * 7 + 1));
    cookies.insert(cookie);
  }
  EXPECT_EQ(cookies.size(), 64u);
  c[0]->send(request(kCmdDisc, 0, 0));
  e.join();
}

// A client that sends reads and never reads the replies fills its socket and stalls; another
// client on the same loop is served all the same.
TEST(NbdSession, StalledClientDoesNotBlockOthers) {
  nbdtest::ServedExport e(kSize);
  auto c = e.start(2);
  ASSERT_TRUE(c[0]->handshake(false));
  ASSERT_TRUE(c[1]->handshake(false));
  for (uint64_t i = 0; i < 40; ++i) c[0]->send(request(kCmdRead, 0, 1 << 20, i));
  for (uint64_t i = 0; i < 20; ++i) {
    c[1]->send(request(kCmdRead, 8192, 512, i));
    EXPECT_EQ(simple_error(*c[1]), 0u);
    auto d = c[1]->recv(512);
    ASSERT_TRUE(d);
    EXPECT_EQ((*d)[0], static_cast<uint8_t>(8192 * 7 + 1));
  }
  c[1]->send(request(kCmdDisc, 0, 0));
  shutdown(c[0]->fd(), SHUT_RDWR);  // the stalled one finally goes away
  e.join();
  EXPECT_EQ(e.result(1), "");
}

}  // namespace
