// Option haggling (proto.md "Fixed newstyle negotiation" and "Option types"): the greeting, the
// client's flags, then options until the client picks the export. Every option's data is read
// into a buffer bounded by kMaxOptionLength, and at most kMaxOptions options are taken.
#include <cstring>
#include <vector>

#include "img/bytes.h"
#include "nbd/proto.h"
#include "nbd/session.h"

namespace img::nbd {

namespace {

Task<Status> send(Conn& conn, const Bytes& b) {
  iovec iov{const_cast<uint8_t*>(b.data()), b.size()};
  co_return co_await conn.write_all({&iov, 1});
}

// The contexts a LIST query names (proto.md "Metadata querying"): a full name, or a namespace
// ("base:", "qemu:") listing all of its contexts. SET takes full names only.
void match_contexts(const ExportConfig& exp, std::string_view q, bool list, bool* base,
                    bool* depth) {
  if (q == kContextBaseAllocation || (list && q == "base:")) *base = true;
  if (exp.allocation_depth && (q == kContextAllocationDepth || (list && q == "qemu:"))) {
    *depth = true;
  }
}

}  // namespace

uint16_t transmission_flags(const ExportConfig& exp, bool structured) {
  uint16_t f = kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendCache;
  if (structured) f |= kTxSendDf;
  if (exp.read_only) {
    f |= kTxReadOnly;
  } else {
    f |= kTxSendTrim | kTxSendWriteZeroes | kTxSendFastZero;
  }
  if (exp.multi_conn || exp.read_only) f |= kTxCanMultiConn;
  return f;
}

Task<Result<Negotiated>> negotiate(Conn& conn, const ExportConfig& exp) {
  Negotiated neg;
  CO_RETURN_IF_ERROR(co_await send(conn, encode_greeting(kFlagFixedNewstyle | kFlagNoZeroes)));
  uint8_t cf[4];
  CO_RETURN_IF_ERROR(co_await conn.read_exact(cf, 4));
  uint32_t client_flags = load_be32(cf);
  // "The server MUST NOT continue if the client sets flags it does not know."
  if (client_flags & ~kKnownClientFlags) {
    co_return invalid_argument(strfmt("client flags 0x%x name unknown bits", client_flags));
  }
  bool no_zeroes = client_flags & kClientNoZeroes;
  std::vector<uint8_t> data;
  for (unsigned n = 0; n < kMaxOptions; ++n) {
    uint8_t hb[kOptionHeaderSize];
    CO_RETURN_IF_ERROR(co_await conn.read_exact(hb, sizeof hb));
    OptionHeader h = decode_option_header(hb);
    if (h.magic != kOptMagic) co_return invalid_argument("bad option magic");
    if (h.length > kMaxOptionLength) {
      co_return invalid_argument(strfmt("option %u claims %u bytes of data (at most %u)", h.option,
                                        h.length, kMaxOptionLength));
    }
    data.resize(h.length);
    if (h.length) CO_RETURN_IF_ERROR(co_await conn.read_exact(data.data(), h.length));
    std::span<const uint8_t> d(data);
    Bytes out;
    auto fail = [&](uint32_t type, std::string_view msg) {
      append_option_error(out, h.option, type, msg);
    };
    switch (h.option) {
      case kOptExportName: {
        // No way to say no but to hang up ("NBD_OPT_EXPORT_NAME").
        std::string name(data.begin(), data.end());
        if (name != exp.name) co_return invalid_argument("client asked for an unknown export");
        neg.tx_flags = transmission_flags(exp, neg.structured);
        CO_RETURN_IF_ERROR(
            co_await send(conn, export_name_reply(exp.driver->size(), neg.tx_flags, no_zeroes)));
        co_return neg;
      }
      case kOptAbort:
        append_option_reply(out, h.option, kRepAck);
        (void)co_await send(conn, out);  // the client may already be gone
        neg.aborted = true;
        co_return neg;
      case kOptList:
        if (h.length != 0) {
          fail(kRepErrInvalid, "NBD_OPT_LIST takes no data");
          break;
        }
        append_option_reply(out, h.option, kRepServer, server_entry(exp.name, exp.description));
        append_option_reply(out, h.option, kRepAck);
        break;
      case kOptStartTls:
        fail(kRepErrPolicy, "TLS not configured");
        break;
      case kOptInfo:
      case kOptGo: {
        auto req = decode_info_request(d);
        if (!req) {
          fail(kRepErrInvalid, "malformed NBD_OPT_INFO/GO data");
          break;
        }
        if (req->name != exp.name) {
          fail(kRepErrUnknown, "export '" + req->name + "' not present");
          break;
        }
        neg.tx_flags = transmission_flags(exp, neg.structured);
        append_option_reply(out, h.option, kRepInfo, info_export(exp.driver->size(), neg.tx_flags));
        for (uint16_t t : req->infos) {
          if (t == kInfoName) append_option_reply(out, h.option, kRepInfo, info_string(t, exp.name));
          if (t == kInfoDescription && !exp.description.empty()) {
            append_option_reply(out, h.option, kRepInfo, info_string(t, exp.description));
          }
        }
        // Always sent, as qemu does: any offset and length works, 4 KiB is the unit that
        // avoids read-modify-write, and kMaxPayload is what a request may carry.
        append_option_reply(out, h.option, kRepInfo, info_block_size(1, 4096, kMaxPayload));
        append_option_reply(out, h.option, kRepAck);
        if (h.option == kOptGo) {
          CO_RETURN_IF_ERROR(co_await send(conn, out));
          co_return neg;
        }
        break;
      }
      case kOptStructuredReply:
        if (h.length != 0) {
          fail(kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else if (neg.structured) {
          fail(kRepErrInvalid, "structured replies already negotiated");
        } else {
          neg.structured = true;
          append_option_reply(out, h.option, kRepAck);
        }
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext: {
        bool set = h.option == kOptSetMetaContext;
        if (set && !neg.structured) {
          fail(kRepErrInvalid, "NBD_OPT_SET_META_CONTEXT needs structured replies first");
          break;
        }
        auto req = decode_meta_context_request(d);
        if (!req) {
          fail(kRepErrInvalid, "malformed meta context request");
          break;
        }
        if (req->name != exp.name) {
          fail(kRepErrUnknown, "export '" + req->name + "' not present");
          break;
        }
        bool base = false, depth = false;
        if (!set && req->queries.empty()) {
          base = true;
          depth = exp.allocation_depth;
        }
        for (const auto& q : req->queries) match_contexts(exp, q, !set, &base, &depth);
        if (base) {
          append_option_reply(out, h.option, kRepMetaContext,
                              meta_context_entry(kContextIdBase, kContextBaseAllocation));
        }
        if (depth) {
          append_option_reply(out, h.option, kRepMetaContext,
                              meta_context_entry(kContextIdDepth, kContextAllocationDepth));
        }
        append_option_reply(out, h.option, kRepAck);
        if (set) {  // a SET replaces what an earlier one chose
          neg.base_allocation = base;
          neg.allocation_depth = depth;
        }
        break;
      }
      default:
        fail(kRepErrUnsup, strfmt("option %u not supported", h.option));
        break;
    }
    CO_RETURN_IF_ERROR(co_await send(conn, out));
  }
  co_return invalid_argument(strfmt("more than %u options", kMaxOptions));
}

}  // namespace img::nbd
