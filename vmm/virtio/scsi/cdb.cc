#include "virtio/scsi/cdb.h"

#include <algorithm>
#include <cstring>

#include "virtio/scsi/scsi_spec.h"

namespace vmm::virtio::scsi {
namespace {

uint16_t be16(std::span<const uint8_t> b, size_t at) { return uint16_t(b[at] << 8 | b[at + 1]); }
uint32_t be32(std::span<const uint8_t> b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}
uint64_t be64(std::span<const uint8_t> b, size_t at) {
  return uint64_t(be32(b, at)) << 32 | be32(b, at + 4);
}
void put16(std::vector<uint8_t>& v, size_t at, uint16_t x) {
  v[at] = uint8_t(x >> 8);
  v[at + 1] = uint8_t(x);
}
void put32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  put16(v, at, uint16_t(x >> 16));
  put16(v, at + 2, uint16_t(x));
}
void put64(std::vector<uint8_t>& v, size_t at, uint64_t x) {
  put32(v, at, uint32_t(x >> 32));
  put32(v, at + 4, uint32_t(x));
}

Command error(Sense s) {
  Command c;
  c.kind = Command::Kind::kError;
  c.sense = s;
  return c;
}
Command invalid_field(int byte) {
  return error({kKeyIllegalRequest, kAscInvalidFieldInCdb, 0, byte});
}
Command invalid_opcode() { return error({kKeyIllegalRequest, kAscInvalidOpcode, 0, 0}); }
Command reply(std::vector<uint8_t> data, uint32_t alloc) {
  if (data.size() > alloc) data.resize(alloc);
  Command c;
  c.reply = std::move(data);
  return c;
}
Command good() { return Command{}; }

// SAM-5: the CDB length follows from the operation code's group.
size_t cdb_length(uint8_t opcode) {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;  // reserved or vendor specific: not implemented
  }
}

bool in_range(uint64_t lba, uint64_t blocks, uint64_t capacity) {
  uint64_t end;
  return !__builtin_add_overflow(lba, blocks, &end) && end <= capacity;
}

// INQUIRY (SPC-4 §6.6): standard data or one VPD page.
Command inquiry(std::span<const uint8_t> cdb, const LunInfo& info) {
  bool evpd = cdb[1] & 1;
  if (cdb[1] & 0xfe) return invalid_field(1);  // CMDDT (obsolete) and reserved bits
  uint8_t page = cdb[2];
  uint32_t alloc = be16(cdb, 3);
  if (!evpd) {
    if (page != 0) return invalid_field(2);
    std::vector<uint8_t> d(36, 0);
    d[0] = 0x00;  // peripheral qualifier 0, direct access block device
    d[2] = 0x06;  // version: SPC-4
    d[3] = 0x02;  // response data format 2
    d[4] = uint8_t(d.size() - 5);
    d[7] = 0x02;  // CMDQUE: tagged commands
    std::memcpy(&d[8], "VMM     ", 8);
    std::memcpy(&d[16], "VIRTUAL DISK    ", 16);
    std::memcpy(&d[32], "1.0 ", 4);
    return reply(std::move(d), alloc);
  }
  std::vector<uint8_t> d(4, 0);
  d[1] = page;
  switch (page) {
    case 0x00:  // supported VPD pages
      for (uint8_t p : {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}) d.push_back(p);
      break;
    case 0x80: {  // unit serial number
      std::string s = info.serial.substr(0, 20);
      d.insert(d.end(), s.begin(), s.end());
      break;
    }
    case 0x83: {  // device identification (SPC-4 §7.8.6)
      // NAA locally assigned (NAA 3, binary, associated with the LU).
      d.insert(d.end(), {0x01, 0x03, 0x00, 0x08});
      uint64_t naa = uint64_t{3} << 60 | (info.naa & ((uint64_t{1} << 60) - 1));
      for (int i = 7; i >= 0; --i) d.push_back(uint8_t(naa >> (8 * i)));
      // T10 vendor ID based (ASCII): vendor "VMM" and the serial.
      std::string id = "VMM     " + info.serial.substr(0, 20);
      d.insert(d.end(), {0x02, 0x01, 0x00, uint8_t(id.size())});
      d.insert(d.end(), id.begin(), id.end());
      break;
    }
    case 0xb0: {  // block limits (SBC-3 §6.5.3)
      d.resize(64, 0);
      d[4] = 0x01;  // WSNZ: WRITE SAME with 0 blocks is refused, not "to the end"
      put16(d, 6, uint16_t(std::min<uint32_t>(info.granularity, 0xffff)));
      put32(d, 8, info.max_transfer);
      put32(d, 12, info.max_transfer);
      if (info.unmap && !info.read_only) {
        put32(d, 20, info.max_unmap_blocks);
        put32(d, 24, info.max_unmap_descriptors);
        put32(d, 28, info.granularity);
        put32(d, 32, 0x80000000u);  // UGAVALID, alignment 0
        put64(d, 36, info.max_unmap_blocks);
      }
      break;
    }
    case 0xb1:  // block device characteristics (SBC-3 §6.5.2)
      d.resize(64, 0);
      put16(d, 4, 1);  // medium rotation rate: non-rotating medium
      break;
    case 0xb2:  // logical block provisioning (SBC-3 §6.5.4)
      d.resize(8, 0);
      if (info.unmap && !info.read_only) {
        // LBPU, LBPWS, LBPWS10; LBPRZ = 1: the device unmaps by writing zeroes (may_unmap), so
        // unmapped blocks read as zeros even over a backing file. Thin provisioned.
        d[5] = 0x80 | 0x40 | 0x20 | 0x04;
        d[6] = 0x02;
      }
      break;
    default:
      return invalid_field(2);
  }
  put16(d, 2, uint16_t(d.size() - 4));
  return reply(std::move(d), alloc);
}

// MODE SENSE 6/10 (SPC-4 §6.11, §6.12) with the caching (SBC-3 §6.4.5) and control (SPC-4
// §7.5.8) pages. MODE SELECT is not implemented, so the changeable values are all zero.
Command mode_sense(std::span<const uint8_t> cdb, bool ten, const LunInfo& info) {
  bool dbd = cdb[1] & 0x08;
  uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, subpage = cdb[3];
  if (ten && (cdb[1] & 0x10)) return invalid_field(1);  // LLBAA: long descriptors not offered
  if (pc == 3) return error({kKeyIllegalRequest, kAscSavingParamsUnsupported, 0, -1});
  if (subpage != 0 && !(page == 0x3f && subpage == 0xff)) return invalid_field(3);
  if (page != 0x08 && page != 0x0a && page != 0x3f) return invalid_field(2);
  uint32_t alloc = ten ? be16(cdb, 7) : cdb[4];
  size_t hdr = ten ? 8 : 4;
  std::vector<uint8_t> d(hdr, 0);
  // Device-specific parameter: WP for a read-only unit, DPOFUA (FUA is honoured).
  d[ten ? 3 : 2] = uint8_t((info.read_only ? 0x80 : 0) | 0x10);
  if (!dbd) {  // one short LBA block descriptor (SBC-3 §6.4.2)
    d.resize(hdr + 8, 0);
    uint32_t n = info.blocks > 0xffffffffull ? 0xffffffffu : uint32_t(info.blocks);
    put32(d, hdr, n);
    put32(d, hdr + 4, kBlockSize);  // byte 4 reserved, then the 24-bit block length
    if (ten)
      put16(d, 6, 8);
    else
      d[3] = 8;
  }
  bool changeable = pc == 1;
  if (page == 0x08 || page == 0x3f) {
    size_t at = d.size();
    d.resize(at + 20, 0);
    d[at] = 0x08;
    d[at + 1] = 0x12;
    if (!changeable && info.write_cache) d[at + 2] = 0x04;  // WCE
  }
  if (page == 0x0a || page == 0x3f) {
    size_t at = d.size();
    d.resize(at + 12, 0);
    d[at] = 0x0a;
    d[at + 1] = 0x0a;
    if (!changeable) d[at + 3] = 0x10;  // queue algorithm modifier 1: unrestricted reordering
  }
  if (ten)
    put16(d, 0, uint16_t(d.size() - 2));
  else
    d[0] = uint8_t(d.size() - 1);
  return reply(std::move(d), alloc);
}

Command report_luns(std::span<const uint8_t> cdb, const LunInfo& info) {
  if (cdb[2] > 2) return invalid_field(2);  // SELECT REPORT: 0, 1, 2
  uint32_t alloc = be32(cdb, 6);
  if (alloc < 16) return invalid_field(6);  // SPC-4 §6.33
  std::vector<uint8_t> d(8, 0);
  put32(d, 0, uint32_t(info.luns.size() * 8));
  for (uint16_t l : info.luns) {
    // SAM-5 §4.7: peripheral device addressing below 256, flat space addressing above.
    uint8_t e[8] = {};
    e[0] = l < 256 ? 0 : uint8_t(0x40 | (l >> 8));
    e[1] = uint8_t(l);
    d.insert(d.end(), e, e + 8);
  }
  return reply(std::move(d), alloc);
}

Command request_sense(std::span<const uint8_t> cdb) {
  if (cdb[1] & 1) return invalid_field(1);  // DESC: descriptor-format sense not offered
  // Sense data travels with each CHECK CONDITION (autosense, §5.6.6.1): nothing is pending.
  return reply(fixed_sense({kKeyNoSense, 0, 0, -1}), cdb[4]);
}

Command rw(std::span<const uint8_t> cdb, const LunInfo& info) {
  Command c;
  uint8_t opc = cdb[0];
  bool write = opc == op::kWrite6 || opc == op::kWrite10 || opc == op::kWrite16;
  c.kind = write ? Command::Kind::kWrite : Command::Kind::kRead;
  uint64_t blocks;
  if (opc == op::kRead6 || opc == op::kWrite6) {
    c.lba = uint32_t(cdb[1] & 0x1f) << 16 | be16(cdb, 2);
    blocks = cdb[4] ? cdb[4] : 256;  // SBC-3 §5.13: 0 means 256 blocks
  } else {
    // RDPROTECT/WRPROTECT: no protection information on these units.
    if (cdb[1] & 0xe0) return invalid_field(1);
    c.fua = cdb[1] & 0x08;
    bool sixteen = opc == op::kRead16 || opc == op::kWrite16;
    c.lba = sixteen ? be64(cdb, 2) : be32(cdb, 2);
    blocks = sixteen ? be32(cdb, 10) : be16(cdb, 7);
  }
  if (!in_range(c.lba, blocks, info.blocks)) return error(lba_out_of_range());
  if (blocks > info.max_transfer) return invalid_field(opc < 0x20 ? 4 : opc < 0x80 ? 7 : 10);
  if (write && info.read_only) return error(write_protected());
  c.blocks = uint32_t(blocks);
  if (write) c.data_out = c.blocks * kBlockSize;  // <= max_transfer * 512
  return c;
}

Command write_same(std::span<const uint8_t> cdb, bool sixteen, const LunInfo& info) {
  if (cdb[1] & 0xe0) return invalid_field(1);  // WRPROTECT
  if (cdb[1] & 0x10) return invalid_field(1);  // ANCHOR: no anchored state
  Command c;
  c.kind = Command::Kind::kWriteSame;
  c.unmap = cdb[1] & 0x08;
  c.ndob = sixteen && (cdb[1] & 0x01);
  if (!sixteen && (cdb[1] & 0x01)) return invalid_field(1);  // obsolete RELADR
  c.lba = sixteen ? be64(cdb, 2) : be32(cdb, 2);
  uint64_t blocks = sixteen ? be32(cdb, 10) : be16(cdb, 7);
  if (!in_range(c.lba, blocks, info.blocks)) return error(lba_out_of_range());
  if (blocks == 0 || blocks > info.max_unmap_blocks) return invalid_field(sixteen ? 10 : 7);
  if (info.read_only) return error(write_protected());
  if (c.unmap && !info.unmap) return invalid_field(1);
  c.blocks = uint32_t(blocks);
  c.data_out = c.ndob ? 0 : kBlockSize;
  return c;
}

}  // namespace

uint64_t Command::data_in() const {
  if (kind == Kind::kRead) return uint64_t{blocks} * kBlockSize;
  if (kind == Kind::kReply) return reply.size();
  return 0;
}

Command decode_cdb(std::span<const uint8_t> cdb, uint16_t lun, const LunInfo& info) {
  (void)lun;
  if (cdb.empty()) return invalid_opcode();
  size_t len = cdb_length(cdb[0]);
  if (len == 0 || cdb.size() < len) return invalid_opcode();
  // NACA in the CONTROL byte (SAM-5 §5.2): ACA is not supported.
  if (cdb[len - 1] & 0x04) return invalid_field(int(len - 1));
  switch (cdb[0]) {
    case op::kTestUnitReady:
    case op::kStartStopUnit:  // no medium to start or eject: accepted as done
      return good();
    case op::kRequestSense:
      return request_sense(cdb);
    case op::kInquiry:
      return inquiry(cdb, info);
    case op::kModeSense6:
      return mode_sense(cdb, false, info);
    case op::kModeSense10:
      return mode_sense(cdb, true, info);
    case op::kReadCapacity10: {  // SBC-3 §5.16
      std::vector<uint8_t> d(8, 0);
      uint64_t last = info.blocks ? info.blocks - 1 : 0;
      put32(d, 0, last > 0xffffffffull ? 0xffffffffu : uint32_t(last));  // 16 needed above
      put32(d, 4, kBlockSize);
      return reply(std::move(d), 8);
    }
    case op::kServiceActionIn16: {  // SBC-3 §5.17 READ CAPACITY 16
      if ((cdb[1] & 0x1f) != kSaReadCapacity16) return invalid_field(1);
      std::vector<uint8_t> d(32, 0);
      put64(d, 0, info.blocks ? info.blocks - 1 : 0);
      put32(d, 8, kBlockSize);
      d[13] = 3;  // 8 logical blocks per physical block: 4 KiB
      if (info.unmap && !info.read_only) d[14] = 0x80 | 0x40;  // LBPME, LBPRZ
      return reply(std::move(d), be32(cdb, 10));
    }
    case op::kRead6:
    case op::kRead10:
    case op::kRead16:
    case op::kWrite6:
    case op::kWrite10:
    case op::kWrite16:
      return rw(cdb, info);
    case op::kSynchronizeCache10:
    case op::kSynchronizeCache16: {
      bool sixteen = cdb[0] == op::kSynchronizeCache16;
      uint64_t lba = sixteen ? be64(cdb, 2) : be32(cdb, 2);
      uint64_t n = sixteen ? be32(cdb, 10) : be16(cdb, 7);
      if (!in_range(lba, n, info.blocks)) return error(lba_out_of_range());
      Command c;
      c.kind = Command::Kind::kSync;  // the whole cache: a superset of the range asked for
      return c;
    }
    case op::kUnmap: {                             // SBC-3 §5.28
      if (cdb[1] & 0x01) return invalid_field(1);  // ANCHOR
      if (info.read_only) return error(write_protected());
      if (!info.unmap) return invalid_opcode();
      Command c;
      c.kind = Command::Kind::kUnmap;
      c.data_out = be16(cdb, 7);
      if (c.data_out == 0) return good();  // SBC-3: not an error, nothing to do
      return c;
    }
    case op::kWriteSame10:
      return write_same(cdb, false, info);
    case op::kWriteSame16:
      return write_same(cdb, true, info);
    case op::kReportLuns:
      return report_luns(cdb, info);
    default:
      return invalid_opcode();
  }
}

std::expected<std::vector<UnmapRange>, Sense> parse_unmap_list(std::span<const uint8_t> list,
                                                               const LunInfo& info) {
  const Sense bad_list{kKeyIllegalRequest, kAscInvalidFieldInParamList, 0, -1};
  if (list.size() < 8)
    return std::unexpected(Sense{kKeyIllegalRequest, kAscParameterListLength, 0, -1});
  uint32_t desc_len = be16(list, 2);
  if (desc_len % 16 || 8ull + desc_len > list.size()) return std::unexpected(bad_list);
  if (desc_len / 16 > info.max_unmap_descriptors) return std::unexpected(bad_list);
  std::vector<UnmapRange> out;
  for (size_t at = 8; at < 8ull + desc_len; at += 16) {
    UnmapRange r{be64(list, at), be32(list, at + 8)};
    if (!in_range(r.lba, r.blocks, info.blocks)) return std::unexpected(lba_out_of_range());
    if (r.blocks > info.max_unmap_blocks) return std::unexpected(bad_list);
    if (r.blocks) out.push_back(r);
  }
  return out;
}

std::vector<uint8_t> fixed_sense(const Sense& s) {
  std::vector<uint8_t> d(kFixedSenseSize, 0);
  d[0] = 0x70;  // current error, fixed format
  d[2] = s.key & 0x0f;
  d[7] = kFixedSenseSize - 8;
  d[12] = s.asc;
  d[13] = s.ascq;
  if (s.field >= 0) {  // SKSV, C/D = 1 (the CDB), field pointer
    d[15] = 0xc0;
    put16(d, 16, uint16_t(s.field));
  }
  return d;
}

Sense medium_error(bool write) {
  return {kKeyMediumError, write ? kAscWriteError : kAscUnrecoveredReadError, 0, -1};
}
Sense write_protected() { return {kKeyDataProtect, kAscWriteProtected, 0, -1}; }
Sense lba_out_of_range() { return {kKeyIllegalRequest, kAscLbaOutOfRange, 0, -1}; }

}  // namespace vmm::virtio::scsi
