// The NBD wire format (NetworkBlockDevice/nbd doc/proto.md), as the server side needs it: the
// fixed newstyle handshake's constants, decoders for what a client sends (option payloads,
// request headers) and encoders for what the server answers (option replies, simple and
// structured replies). Pure functions over bytes, no I/O: the session (session.h) drives them,
// and the unit tests and the fuzz target call them directly.
//
// Every decoder checks every length against the bytes it was given and against the limits
// below before the caller allocates or does I/O for it.
//
// Thread-safety: plain functions and values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "img/status.h"

namespace img::nbd {

// proto.md "Handshake": the server's greeting and the option haggling's magics.
constexpr uint64_t kNbdMagic = 0x4e42444d41474943;  // "NBDMAGIC"
constexpr uint64_t kOptMagic = 0x49484156454f5054;  // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x3e889045565a9;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFixedNewstyle = 1 << 0;
constexpr uint32_t kClientNoZeroes = 1 << 1;
constexpr uint32_t kKnownClientFlags = kClientFixedNewstyle | kClientNoZeroes;

// Options ("Option types").
enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptPeekExport = 4,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
  kOptListMetaContext = 9,
  kOptSetMetaContext = 10,
};

// Option reply types; errors have bit 31 set.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepErrUnsup = (1u << 31) + 1;
constexpr uint32_t kRepErrPolicy = (1u << 31) + 2;
constexpr uint32_t kRepErrInvalid = (1u << 31) + 3;
constexpr uint32_t kRepErrPlatform = (1u << 31) + 4;
constexpr uint32_t kRepErrTlsReqd = (1u << 31) + 5;
constexpr uint32_t kRepErrUnknown = (1u << 31) + 6;
constexpr uint32_t kRepErrShutdown = (1u << 31) + 7;
constexpr uint32_t kRepErrBlockSizeReqd = (1u << 31) + 8;
constexpr uint32_t kRepErrTooBig = (1u << 31) + 9;

// NBD_INFO_* ("Info types" of NBD_OPT_INFO / NBD_OPT_GO).
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags ("Transmission flags").
constexpr uint16_t kTxHasFlags = 1 << 0;
constexpr uint16_t kTxReadOnly = 1 << 1;
constexpr uint16_t kTxSendFlush = 1 << 2;
constexpr uint16_t kTxSendFua = 1 << 3;
constexpr uint16_t kTxRotational = 1 << 4;
constexpr uint16_t kTxSendTrim = 1 << 5;
constexpr uint16_t kTxSendWriteZeroes = 1 << 6;
constexpr uint16_t kTxSendDf = 1 << 7;
constexpr uint16_t kTxCanMultiConn = 1 << 8;
constexpr uint16_t kTxSendResize = 1 << 9;
constexpr uint16_t kTxSendCache = 1 << 10;
constexpr uint16_t kTxSendFastZero = 1 << 11;

// Requests ("Request message"): 28 bytes.
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr size_t kRequestSize = 28;
enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Replies: simple (16 bytes) and structured chunk headers (20 bytes).
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr size_t kSimpleReplySize = 16;
constexpr size_t kChunkHeaderSize = 20;
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyNone = 0;
constexpr uint16_t kReplyOffsetData = 1;
constexpr uint16_t kReplyOffsetHole = 2;
constexpr uint16_t kReplyBlockStatus = 5;
constexpr uint16_t kReplyError = (1 << 15) + 1;

// base:allocation's flags ("base:allocation metadata context").
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;

// Error values on the wire ("Error values"): Linux's numbers, fixed by the spec.
constexpr uint32_t kEperm = 1;
constexpr uint32_t kEio = 5;
constexpr uint32_t kEnomem = 12;
constexpr uint32_t kEinval = 22;
constexpr uint32_t kEnospc = 28;
constexpr uint32_t kEoverflow = 75;
constexpr uint32_t kEnotsup = 95;
constexpr uint32_t kEshutdown = 108;

// Limits this server holds clients to (qemu's NBD_MAX_BUFFER_SIZE is 32 MiB too; it advertises
// it as the maximum block size, so a well-behaved client never exceeds it).
constexpr uint32_t kMaxPayload = 32u << 20;
constexpr uint32_t kMaxString = 4096;  // "MUST be no longer than 4096 bytes"
// An option's data: a name, info requests and meta context queries fit well within this.
constexpr uint32_t kMaxOptionLength = 64 * 1024;
constexpr uint32_t kMaxMetaQueries = 128;

// The two metadata contexts this server knows, and the ids it gives them.
constexpr std::string_view kContextBaseAllocation = "base:allocation";
constexpr std::string_view kContextAllocationDepth = "qemu:allocation-depth";
constexpr uint32_t kContextIdBase = 1;
constexpr uint32_t kContextIdDepth = 2;

using Bytes = std::vector<uint8_t>;

// ---- what the client sends -------------------------------------------------------------------

// An option header without its magic check done: magic, option, length (16 bytes).
struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;
};
constexpr size_t kOptionHeaderSize = 16;
OptionHeader decode_option_header(const uint8_t* p);

// NBD_OPT_INFO / NBD_OPT_GO data: a name and the info types asked for.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> infos;
};
// nullopt if the data is malformed (lengths that disagree with the option's length).
std::optional<InfoRequest> decode_info_request(std::span<const uint8_t> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: an export name and queries.
struct MetaContextRequest {
  std::string name;
  std::vector<std::string> queries;
};
std::optional<MetaContextRequest> decode_meta_context_request(std::span<const uint8_t> data);

// A transmission request.
struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;  // the spec's "handle"
  uint64_t offset = 0;
  uint32_t length = 0;
};
Request decode_request(const uint8_t* p);
void encode_request(const Request& r, uint8_t* p);  // for tests and clients

// What a server that knows its export decides about a request before doing anything for it.
struct ExportLimits {
  uint64_t size = 0;
  uint16_t tx_flags = 0;  // what was advertised
  bool structured = false;
  bool any_meta_context = false;
};
enum class Verdict {
  kOk,
  kDisconnect,  // the stream cannot be trusted any more (bad magic, unreadable write payload)
  kError,       // reply with error() and go on (the payload, if any, is read and dropped first)
};
struct Check {
  Verdict verdict = Verdict::kOk;
  uint32_t error = 0;  // for kError: the NBD error value
  const char* why = "";
};
// Checks magic, command, flags, length and range against the export (proto.md "Request types").
Check check_request(const Request& r, const ExportLimits& e);
// Bytes of payload that follow the header (a write's data), whatever the verdict.
inline uint32_t payload_length(const Request& r) { return r.type == kCmdWrite ? r.length : 0; }

// ---- what the server sends -------------------------------------------------------------------

// The greeting: NBDMAGIC, IHAVEOPT, handshake flags (18 bytes).
Bytes encode_greeting(uint16_t handshake_flags);
// An option reply: magic, option, type, length, data.
void append_option_reply(Bytes& out, uint32_t option, uint32_t type,
                         std::span<const uint8_t> data = {});
void append_option_error(Bytes& out, uint32_t option, uint32_t type, std::string_view message);
// NBD_REP_INFO payloads.
Bytes info_export(uint64_t size, uint16_t tx_flags);
Bytes info_string(uint16_t type, std::string_view s);  // NBD_INFO_NAME / NBD_INFO_DESCRIPTION
Bytes info_block_size(uint32_t min, uint32_t preferred, uint32_t max);
// NBD_REP_SERVER payload (NBD_OPT_LIST): name length, name, description.
Bytes server_entry(std::string_view name, std::string_view description);
// NBD_REP_META_CONTEXT payload: id, name.
Bytes meta_context_entry(uint32_t id, std::string_view name);
// NBD_OPT_EXPORT_NAME's answer: size, flags, and 124 zero bytes unless the client said NO_ZEROES.
Bytes export_name_reply(uint64_t size, uint16_t tx_flags, bool no_zeroes);

void encode_simple_reply(uint8_t* p, uint32_t error, uint64_t cookie);
void encode_chunk_header(uint8_t* p, uint16_t flags, uint16_t type, uint64_t cookie,
                         uint32_t length);

// One extent of a NBD_REPLY_TYPE_BLOCK_STATUS chunk.
struct Extent {
  uint32_t length = 0;
  uint32_t flags = 0;
};

// The NBD error value a failed operation is reported with ("Error values": a server SHOULD map
// what it cannot express to EIO... except the few the client acts on).
uint32_t wire_error(const Error& e);

}  // namespace img::nbd
