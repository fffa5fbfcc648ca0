#include "virtio/scsi/request.h"

#include <algorithm>
#include <cstring>

#include "img/status.h"
#include "virtio/scsi/scsi_spec.h"

namespace vmm::virtio::scsi {
namespace {

uint32_t le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // little-endian host (virtio_spec.h)
  return v;
}
uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Splits descs[begin, end) into the first `head` bytes (copied into out, or kept as spans in
// area) and the rest (iovecs). Returns how many head bytes the descriptors held.
struct Split {
  std::vector<uint8_t> head;
  ResponseArea area;
  std::vector<iovec> rest;
  uint64_t rest_len = 0;
};
Split split(const std::vector<Descriptor>& d, size_t begin, size_t end, uint32_t want, bool copy) {
  Split s;
  uint32_t got = 0;
  for (size_t i = begin; i < end; ++i) {
    uint32_t take = std::min(want - got, d[i].len);
    if (take) {
      if (copy)
        s.head.insert(s.head.end(), d[i].host, d[i].host + take);
      else
        s.area.spans.push_back({d[i].host, take});
      got += take;
    }
    if (d[i].len > take) {
      s.rest.push_back({d[i].host + take, d[i].len - take});
      s.rest_len += d[i].len - take;  // at most queue size * 4 GiB: no overflow
    }
  }
  s.area.size = got;
  return s;
}

size_t first_writable(const DescriptorChain& c) {
  size_t nr = 0;
  while (nr < c.descs.size() && !c.descs[nr].device_writable) ++nr;
  return nr;  // read_chain guarantees readable descriptors come first
}

}  // namespace

void ResponseArea::write(std::span<const uint8_t> bytes) const {
  size_t at = 0;
  for (std::span<uint8_t> s : spans) {
    if (at >= bytes.size()) break;
    size_t n = std::min(s.size(), bytes.size() - at);
    std::memcpy(s.data(), bytes.data() + at, n);
    at += n;
  }
}

std::expected<CmdRequest, std::string> parse_cmd_chain(const DescriptorChain& chain,
                                                       uint32_t cdb_size, uint32_t sense_size) {
  size_t nr = first_writable(chain);
  uint32_t hdr = kCmdReqHeader + cdb_size;
  Split in = split(chain.descs, 0, nr, hdr, /*copy=*/true);
  if (in.head.size() < hdr) {
    return std::unexpected(img::strfmt("request header of %zu bytes < %u", in.head.size(), hdr));
  }
  uint32_t resp = kCmdRespHeader + sense_size;
  Split out = split(chain.descs, nr, chain.descs.size(), resp, /*copy=*/false);
  if (out.area.size < resp) {
    return std::unexpected(img::strfmt("response area of %u bytes < %u", out.area.size, resp));
  }
  CmdRequest r;
  std::memcpy(r.lun.data(), in.head.data(), 8);
  r.tag = le64(in.head.data() + 8);
  r.cdb.assign(in.head.begin() + kCmdReqHeader, in.head.end());
  r.data_out = std::move(in.rest);
  r.out_len = in.rest_len;
  r.data_in = std::move(out.rest);
  r.in_len = out.rest_len;
  r.resp = std::move(out.area);
  return r;
}

std::vector<uint8_t> encode_cmd_resp(uint8_t response, uint8_t status, uint32_t resid,
                                     std::span<const uint8_t> sense, uint32_t sense_size) {
  uint32_t n = static_cast<uint32_t>(std::min<size_t>(sense.size(), sense_size));
  std::vector<uint8_t> b(kCmdRespHeader + sense_size, 0);  // the rest of the sense area zeroed
  std::memcpy(&b[0], &n, 4);
  std::memcpy(&b[4], &resid, 4);
  b[10] = status;
  b[11] = response;
  // No sense data is an empty span whose data() may be null: memcpy from null is undefined even
  // for 0 bytes (found by virtio_scsi_request_fuzz under UBSan on its first seed).
  if (n > 0) std::memcpy(b.data() + kCmdRespHeader, sense.data(), n);
  return b;
}

std::optional<uint16_t> decode_lun(std::span<const uint8_t, 8> lun, uint16_t num_luns) {
  if (lun[0] != 1 || lun[1] != 0) return std::nullopt;  // one target: 0
  for (int i = 4; i < 8; ++i)
    if (lun[i]) return std::nullopt;
  uint8_t method = lun[2] >> 6;  // SAM-5 §4.7: 0 peripheral, 1 flat space
  if (method > 1) return std::nullopt;
  uint16_t l = uint16_t((lun[2] & 0x3f) << 8 | lun[3]);
  if (method == 0 && lun[2] != 0) return std::nullopt;  // peripheral: bus 0 only
  if (l >= num_luns) return std::nullopt;
  return l;
}

std::expected<CtrlRequest, std::string> parse_ctrl_chain(const DescriptorChain& chain) {
  size_t nr = first_writable(chain);
  Split in = split(chain.descs, 0, nr, kTmfReqSize, /*copy=*/true);
  if (in.head.size() < 4) return std::unexpected("control request shorter than its type");
  CtrlRequest r;
  r.type = le32(in.head.data());
  uint32_t need_in, need_out;
  if (r.type == kTTmf) {
    need_in = kTmfReqSize;
    need_out = 1;
  } else if (r.type == kTAnQuery || r.type == kTAnSubscribe) {
    need_in = kAnReqSize;
    need_out = kAnRespSize;
  } else {
    return std::unexpected(img::strfmt("control request type %u", r.type));
  }
  if (in.head.size() < need_in) {
    return std::unexpected(
        img::strfmt("control request of %zu bytes < %u", in.head.size(), need_in));
  }
  Split out = split(chain.descs, nr, chain.descs.size(), need_out, /*copy=*/false);
  if (out.area.size < need_out) return std::unexpected("control response area too short");
  if (r.type == kTTmf) {
    r.subtype = le32(in.head.data() + 4);
    std::memcpy(r.lun.data(), in.head.data() + 8, 8);
    r.tag = le64(in.head.data() + 16);
  } else {
    std::memcpy(r.lun.data(), in.head.data() + 4, 8);
  }
  r.resp = std::move(out.area);
  return r;
}

std::vector<iovec> iov_prefix(const std::vector<iovec>& iov, uint64_t n) {
  std::vector<iovec> out;
  for (const iovec& v : iov) {
    if (n == 0) break;
    size_t take = static_cast<size_t>(std::min<uint64_t>(v.iov_len, n));
    out.push_back({v.iov_base, take});
    n -= take;
  }
  return out;
}

uint64_t copy_to_iov(const std::vector<iovec>& iov, std::span<const uint8_t> src) {
  uint64_t at = 0;
  for (const iovec& v : iov) {
    if (at >= src.size()) break;
    size_t n = std::min<size_t>(v.iov_len, src.size() - at);
    std::memcpy(v.iov_base, src.data() + at, n);
    at += n;
  }
  return at;
}

uint64_t copy_from_iov(const std::vector<iovec>& iov, std::span<uint8_t> dst) {
  uint64_t at = 0;
  for (const iovec& v : iov) {
    if (at >= dst.size()) break;
    size_t n = std::min<size_t>(v.iov_len, dst.size() - at);
    std::memcpy(dst.data() + at, v.iov_base, n);
    at += n;
  }
  return at;
}

}  // namespace vmm::virtio::scsi
