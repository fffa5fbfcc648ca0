// The NBD wire format: see proto.h; section names refer to NetworkBlockDevice/nbd doc/proto.md.
#include "nbd/proto.h"

#include <cerrno>
#include <cstring>

#include "img/bytes.h"

namespace img::nbd {

namespace {

void append_be16(Bytes& out, uint16_t v) {
  uint8_t b[2];
  store_be16(b, v);
  out.insert(out.end(), b, b + 2);
}
void append_be32(Bytes& out, uint32_t v) {
  uint8_t b[4];
  store_be32(b, v);
  out.insert(out.end(), b, b + 4);
}
void append_be64(Bytes& out, uint64_t v) {
  uint8_t b[8];
  store_be64(b, v);
  out.insert(out.end(), b, b + 8);
}
void append_str(Bytes& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }

// A cursor over option data that refuses to run past its end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> d) : d_(d) {}
  bool u16(uint16_t* v) {
    if (left() < 2) return false;
    *v = load_be16(d_.data() + pos_);
    pos_ += 2;
    return true;
  }
  bool u32(uint32_t* v) {
    if (left() < 4) return false;
    *v = load_be32(d_.data() + pos_);
    pos_ += 4;
    return true;
  }
  // A string of len bytes: at most kMaxString, no NUL ("Conventions").
  bool str(uint32_t len, std::string* s) {
    if (len > kMaxString || left() < len) return false;
    s->assign(reinterpret_cast<const char*>(d_.data() + pos_), len);
    pos_ += len;
    return s->find('\0') == std::string::npos;
  }
  size_t left() const { return d_.size() - pos_; }

 private:
  std::span<const uint8_t> d_;
  size_t pos_ = 0;
};

}  // namespace

OptionHeader decode_option_header(const uint8_t* p) {
  return {load_be64(p), load_be32(p + 8), load_be32(p + 12)};
}

// "NBD_OPT_INFO and NBD_OPT_GO": 32 bits of name length, name, 16 bits of count, 16 bits each.
std::optional<InfoRequest> decode_info_request(std::span<const uint8_t> data) {
  Reader r(data);
  InfoRequest req;
  uint32_t name_len;
  uint16_t n;
  if (!r.u32(&name_len) || !r.str(name_len, &req.name) || !r.u16(&n)) return std::nullopt;
  if (r.left() != size_t{n} * 2) return std::nullopt;
  for (uint16_t i = 0; i < n; ++i) {
    uint16_t t = 0;
    r.u16(&t);  // cannot fail: the length was checked above
    req.infos.push_back(t);
  }
  return req;
}

// "NBD_OPT_LIST_META_CONTEXT": name length, name, number of queries, each length + string.
std::optional<MetaContextRequest> decode_meta_context_request(std::span<const uint8_t> data) {
  Reader r(data);
  MetaContextRequest req;
  uint32_t name_len, n;
  if (!r.u32(&name_len) || !r.str(name_len, &req.name) || !r.u32(&n)) return std::nullopt;
  // Each query takes at least its 4-byte length: a count the data cannot hold is a lie.
  if (n > kMaxMetaQueries || n > r.left() / 4) return std::nullopt;
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len;
    std::string q;
    if (!r.u32(&len) || !r.str(len, &q)) return std::nullopt;
    req.queries.push_back(std::move(q));
  }
  if (r.left() != 0) return std::nullopt;
  return req;
}

Request decode_request(const uint8_t* p) {
  Request r;
  r.magic = load_be32(p);
  r.flags = load_be16(p + 4);
  r.type = load_be16(p + 6);
  r.cookie = load_be64(p + 8);
  r.offset = load_be64(p + 16);
  r.length = load_be32(p + 24);
  return r;
}

void encode_request(const Request& r, uint8_t* p) {
  store_be32(p, r.magic);
  store_be16(p + 4, r.flags);
  store_be16(p + 6, r.type);
  store_be64(p + 8, r.cookie);
  store_be64(p + 16, r.offset);
  store_be32(p + 24, r.length);
}

Check check_request(const Request& r, const ExportLimits& e) {
  auto err = [](uint32_t code, const char* why) { return Check{Verdict::kError, code, why}; };
  if (r.magic != kRequestMagic) return {Verdict::kDisconnect, 0, "bad request magic"};
  // A write's payload must be read to find the next request; one larger than we ever accept is
  // not read into memory: the spec lets a server disconnect instead ("Request message").
  if (r.type == kCmdWrite && r.length > kMaxPayload) {
    return {Verdict::kDisconnect, 0, "write payload larger than the 32 MiB maximum"};
  }
  uint16_t allowed = kCmdFlagFua;  // FUA is valid on every command (ignored where meaningless)
  switch (r.type) {
    case kCmdRead:
      if (e.structured) allowed |= kCmdFlagDf;
      break;
    case kCmdWriteZeroes:
      allowed |= kCmdFlagNoHole;
      if (e.tx_flags & kTxSendFastZero) allowed |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      break;
    case kCmdWrite:
    case kCmdDisc:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
      break;
    default:
      return err(kEinval, "unknown command");
  }
  if ((r.flags & kCmdFlagFua) && !(e.tx_flags & kTxSendFua)) allowed &= ~kCmdFlagFua;
  if (r.flags & ~allowed) return err(kEinval, "flags not valid for this command");
  if (r.type == kCmdDisc || r.type == kCmdFlush) return {};
  bool writes = r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes;
  if (writes && (e.tx_flags & kTxReadOnly)) return err(kEperm, "export is read-only");
  if (r.type == kCmdRead && r.length > kMaxPayload) {
    // "NBD_CMD_READ": EOVERFLOW when structured replies are on, else EINVAL.
    return err(e.structured ? kEoverflow : kEinval, "read larger than the 32 MiB maximum");
  }
  if (r.offset > e.size || r.length > e.size - r.offset) {
    return err(kEinval, "request past the end of the export");
  }
  if (r.type == kCmdBlockStatus) {
    if (!e.any_meta_context) return err(kEinval, "block status without a metadata context");
    if (r.length == 0) return err(kEinval, "block status of zero length");
  }
  return {};
}

Bytes encode_greeting(uint16_t handshake_flags) {
  Bytes out;
  append_be64(out, kNbdMagic);
  append_be64(out, kOptMagic);
  append_be16(out, handshake_flags);
  return out;
}

void append_option_reply(Bytes& out, uint32_t option, uint32_t type,
                         std::span<const uint8_t> data) {
  append_be64(out, kOptReplyMagic);
  append_be32(out, option);
  append_be32(out, type);
  append_be32(out, static_cast<uint32_t>(data.size()));
  out.insert(out.end(), data.begin(), data.end());
}

void append_option_error(Bytes& out, uint32_t option, uint32_t type, std::string_view message) {
  std::string_view m = message.substr(0, kMaxString);
  append_option_reply(out, option, type,
                      {reinterpret_cast<const uint8_t*>(m.data()), m.size()});
}

Bytes info_export(uint64_t size, uint16_t tx_flags) {
  Bytes out;
  append_be16(out, kInfoExport);
  append_be64(out, size);
  append_be16(out, tx_flags);
  return out;
}

Bytes info_string(uint16_t type, std::string_view s) {
  Bytes out;
  append_be16(out, type);
  append_str(out, s.substr(0, kMaxString));
  return out;
}

Bytes info_block_size(uint32_t min, uint32_t preferred, uint32_t max) {
  Bytes out;
  append_be16(out, kInfoBlockSize);
  append_be32(out, min);
  append_be32(out, preferred);
  append_be32(out, max);
  return out;
}

Bytes server_entry(std::string_view name, std::string_view description) {
  Bytes out;
  append_be32(out, static_cast<uint32_t>(name.size()));
  append_str(out, name);
  append_str(out, description.substr(0, kMaxString));
  return out;
}

Bytes meta_context_entry(uint32_t id, std::string_view name) {
  Bytes out;
  append_be32(out, id);
  append_str(out, name);
  return out;
}

Bytes export_name_reply(uint64_t size, uint16_t tx_flags, bool no_zeroes) {
  Bytes out;
  append_be64(out, size);
  append_be16(out, tx_flags);
  if (!no_zeroes) out.resize(out.size() + 124, 0);
  return out;
}

void encode_simple_reply(uint8_t* p, uint32_t error, uint64_t cookie) {
  store_be32(p, kSimpleReplyMagic);
  store_be32(p + 4, error);
  store_be64(p + 8, cookie);
}

void encode_chunk_header(uint8_t* p, uint16_t flags, uint16_t type, uint64_t cookie,
                         uint32_t length) {
  store_be32(p, kStructuredReplyMagic);
  store_be16(p + 4, flags);
  store_be16(p + 6, type);
  store_be64(p + 8, cookie);
  store_be32(p + 16, length);
}

uint32_t wire_error(const Error& e) {
  switch (e.code()) {
    case ErrorCode::kInvalidArgument:
      return kEinval;
    case ErrorCode::kReadOnly:
    case ErrorCode::kPermission:
    case ErrorCode::kLocked:
      return kEperm;
    case ErrorCode::kNoSpace:
      return kEnospc;
    case ErrorCode::kNotSupported:
      return kEnotsup;
    case ErrorCode::kIo:
      switch (e.sys_errno()) {
        case ENOSPC:
        case EDQUOT:
        case EFBIG:
          return kEnospc;
        case EPERM:
        case EACCES:
        case EROFS:
          return kEperm;
        case ENOMEM:
          return kEnomem;
        default:
          return kEio;
      }
    default:
      return kEio;
  }
}

}  // namespace img::nbd
