#include "virtio/blk/request.h"

#include <algorithm>
#include <cstring>

#include "virtio/blk/blk_spec.h"

namespace vmm::virtio::blk {
namespace {

std::unexpected<ParseError> fail(uint8_t* status, uint8_t code, std::string why) {
  return std::unexpected(ParseError{status, code, std::move(why)});
}

// [sector, sector + count) inside the capacity, overflow-checked.
bool sectors_in_range(uint64_t sector, uint64_t count, uint64_t capacity) {
  uint64_t end;
  return !__builtin_add_overflow(sector, count, &end) && end <= capacity;
}

}  // namespace

std::expected<Request, ParseError> parse_request(const DescriptorChain& chain,
                                                 const Limits& limits) {
  const auto& d = chain.descs;
  if (d.empty()) return fail(nullptr, kSIoErr, "empty chain");
  // §2.7.4 Message Framing: the device must not assume how the driver splits a request into
  // descriptors. The device-readable part starts with the 16-byte header and the device-writable
  // part ends with the status byte; the data is what lies between them (readable for OUT,
  // DISCARD and WRITE_ZEROES, writable for IN and GET_ID). read_chain guarantees that readable
  // descriptors come before writable ones.
  size_t nr = 0;
  while (nr < d.size() && !d[nr].device_writable) ++nr;
  size_t last = d.size();
  while (last > nr && d[last - 1].len == 0) --last;
  if (last == nr) return fail(nullptr, kSIoErr, "no device-writable status byte ends the chain");
  Request req;
  req.status = d[last - 1].host + d[last - 1].len - 1;
  ReqHeader h;
  auto* hp = reinterpret_cast<uint8_t*>(&h);
  size_t got = 0;
  std::vector<iovec> rdata, wdata;
  for (size_t i = 0; i < nr; ++i) {
    uint32_t skip = 0;
    if (got < sizeof h) {  // copy the header out of guest memory, then validate the copy
      skip = static_cast<uint32_t>(std::min<uint64_t>(sizeof h - got, d[i].len));
      std::memcpy(hp + got, d[i].host, skip);
      got += skip;
    }
    if (d[i].len > skip) rdata.push_back({d[i].host + skip, d[i].len - skip});
  }
  if (got < sizeof h) return fail(req.status, kSIoErr, "request header shorter than 16 bytes");
  for (size_t i = nr; i < last; ++i) {
    uint32_t len = d[i].len - (i == last - 1 ? 1 : 0);
    if (len) wdata.push_back({d[i].host, len});
  }

  // The data in the direction the request type needs (none the other way), within the caps.
  auto gather = [&](bool writable, bool cap_size) -> std::expected<void, ParseError> {
    const std::vector<iovec>& data = writable ? wdata : rdata;
    if (!(writable ? rdata : wdata).empty()) {
      return fail(req.status, kSIoErr,
                  writable ? "read buffer is not device-writable" : "write buffer is device-writable");
    }
    if (cap_size && data.size() > limits.seg_max) {
      return fail(req.status, kSIoErr,
                  img::strfmt("%zu data segments > seg_max %u", data.size(), limits.seg_max));
    }
    req.iov.reserve(data.size());
    for (const iovec& x : data) {
      if (cap_size && x.iov_len > limits.size_max) {
        return fail(req.status, kSIoErr,
                    img::strfmt("segment of %zu bytes > size_max %u", x.iov_len, limits.size_max));
      }
      req.iov.push_back(x);
      req.data_len += x.iov_len;  // at most queue size * 4 GiB: no overflow
    }
    return {};
  };

  switch (h.type) {
    case kTIn:
    case kTOut: {
      bool in = h.type == kTIn;
      req.type = in ? RequestType::kIn : RequestType::kOut;
      if (!in && limits.read_only) return fail(req.status, kSIoErr, "write to a read-only disk");
      if (auto r = gather(/*writable=*/in, /*cap_size=*/true); !r)
        return std::unexpected(r.error());
      if (req.data_len == 0 || req.data_len % kSectorSize) {
        return fail(req.status, kSIoErr,
                    img::strfmt("data length %llu is not a positive multiple of 512",
                                static_cast<unsigned long long>(req.data_len)));
      }
      if (!sectors_in_range(h.sector, req.data_len / kSectorSize, limits.capacity_sectors)) {
        return fail(req.status, kSIoErr,
                    img::strfmt("sector %llu + %llu past capacity %llu",
                                static_cast<unsigned long long>(h.sector),
                                static_cast<unsigned long long>(req.data_len / kSectorSize),
                                static_cast<unsigned long long>(limits.capacity_sectors)));
      }
      req.offset = h.sector * kSectorSize;  // < capacity * 512, which fits (capacity = size / 512)
      return req;
    }
    case kTFlush:
      req.type = RequestType::kFlush;
      if (!rdata.empty() || !wdata.empty()) {
        return fail(req.status, kSIoErr, "flush with data descriptors");
      }
      return req;
    case kTGetId: {
      req.type = RequestType::kGetId;
      if (auto r = gather(/*writable=*/true, /*cap_size=*/false); !r)
        return std::unexpected(r.error());
      if (req.data_len == 0) return fail(req.status, kSIoErr, "GET_ID without a buffer");
      return req;
    }
    case kTDiscard:
    case kTWriteZeroes: {
      bool discard = h.type == kTDiscard;
      req.type = discard ? RequestType::kDiscard : RequestType::kWriteZeroes;
      if (discard ? !limits.discard : !limits.write_zeroes) {
        return fail(req.status, kSUnsupp,
                    discard ? "discard not negotiated" : "write-zeroes not negotiated");
      }
      if (limits.read_only)
        return fail(req.status, kSIoErr, "discard/write-zeroes on a read-only disk");
      if (auto r = gather(/*writable=*/false, /*cap_size=*/false); !r)
        return std::unexpected(r.error());
      uint32_t max_seg = discard ? limits.max_discard_seg : limits.max_write_zeroes_seg;
      uint32_t max_sectors = discard ? limits.max_discard_sectors : limits.max_write_zeroes_sectors;
      constexpr uint64_t kSeg = sizeof(DiscardWriteZeroesSeg);
      if (req.data_len == 0 || req.data_len % kSeg || req.data_len / kSeg > max_seg) {
        return fail(req.status, kSIoErr,
                    img::strfmt("%llu bytes of segments (max %u segments)",
                                static_cast<unsigned long long>(req.data_len), max_seg));
      }
      // Copy the segments out of guest memory (they may straddle descriptors), then check them.
      std::vector<uint8_t> raw(req.data_len);
      size_t at = 0;
      for (const iovec& v : req.iov) {
        std::memcpy(raw.data() + at, v.iov_base, v.iov_len);
        at += v.iov_len;
      }
      for (size_t i = 0; i < raw.size(); i += kSeg) {
        DiscardWriteZeroesSeg s;
        std::memcpy(&s, raw.data() + i, kSeg);
        // §5.2.6.2: unmap is only meaningful for write-zeroes; reserved flags are unsupported.
        uint32_t allowed = discard ? 0 : kSegFlagUnmap;
        if (s.flags & ~allowed)
          return fail(req.status, kSUnsupp, img::strfmt("segment flags 0x%x", s.flags));
        if (s.num_sectors > max_sectors) {
          return fail(req.status, kSIoErr,
                      img::strfmt("segment of %u sectors > %u", s.num_sectors, max_sectors));
        }
        if (!sectors_in_range(s.sector, s.num_sectors, limits.capacity_sectors)) {
          return fail(req.status, kSIoErr, "segment past capacity");
        }
        if (s.num_sectors == 0) continue;
        req.ranges.push_back({s.sector * kSectorSize, uint64_t{s.num_sectors} * kSectorSize,
                              (s.flags & kSegFlagUnmap) != 0});
      }
      req.iov.clear();
      req.data_len = 0;
      return req;
    }
    default:
      return fail(req.status, kSUnsupp, img::strfmt("request type %u", h.type));
  }
}

uint32_t used_length(const Request& req) {
  switch (req.type) {
    case RequestType::kIn:
      return static_cast<uint32_t>(std::min<uint64_t>(req.data_len + 1, UINT32_MAX));
    case RequestType::kGetId:
      return static_cast<uint32_t>(std::min<uint64_t>(req.data_len, kIdBytes)) + 1;
    default:
      return 1;
  }
}

}  // namespace vmm::virtio::blk
