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
  const Descriptor& st = d.back();
  if (!st.device_writable || st.len < 1) {
    return fail(nullptr, kSIoErr, "last descriptor is not a writable status byte");
  }
  Request req;
  req.status = st.host;
  if (d.size() < 2) return fail(req.status, kSIoErr, "no request header");
  const Descriptor& hd = d.front();
  if (hd.device_writable || hd.len != sizeof(ReqHeader)) {
    return fail(req.status, kSIoErr, "header is not one device-readable 16-byte descriptor");
  }
  ReqHeader h;
  std::memcpy(&h, hd.host, sizeof h);  // copy, then validate
  std::span<const Descriptor> data(d.begin() + 1, d.end() - 1);

  // Direction and total length of the data descriptors.
  auto gather = [&](bool writable, bool cap_size) -> std::expected<void, ParseError> {
    if (cap_size && data.size() > limits.seg_max) {
      return fail(req.status, kSIoErr,
                  img::strfmt("%zu data segments > seg_max %u", data.size(), limits.seg_max));
    }
    req.iov.reserve(data.size());
    for (const Descriptor& x : data) {
      if (x.device_writable != writable) {
        return fail(
            req.status, kSIoErr,
            writable ? "read buffer is not device-writable" : "write buffer is device-writable");
      }
      if (cap_size && x.len > limits.size_max) {
        return fail(req.status, kSIoErr,
                    img::strfmt("segment of %u bytes > size_max %u", x.len, limits.size_max));
      }
      if (x.len == 0) continue;
      req.iov.push_back({x.host, x.len});
      req.data_len += x.len;  // at most queue size * 4 GiB: no overflow
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
      if (!data.empty()) return fail(req.status, kSIoErr, "flush with data descriptors");
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
