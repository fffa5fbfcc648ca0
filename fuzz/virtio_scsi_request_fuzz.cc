// libFuzzer target: a hostile guest's virtio-scsi request queue (virtio 1.2 §5.6.6.1) and the
// CDB decoder behind it. The input becomes guest memory holding a split virtqueue and whatever
// its descriptors point at; every available chain is split into header, data and response,
// its LUN and CDB decoded, an UNMAP list parsed, and the response written. Nothing may crash,
// hang or touch memory outside the guest's; every buffer the device would move data through is
// written in full, so AddressSanitizer sees any escape. Properties of the decoder (ranges inside
// the capacity, transfers within the limit, replies within the allocation) end in a trap.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvm/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/scsi/cdb.h"
#include "virtio/scsi/request.h"
#include "virtio/scsi/scsi_spec.h"

namespace {
constexpr size_t kMem = 64 * 1024;
namespace vs = vmm::virtio::scsi;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  std::vector<uint8_t> mem(kMem, 0);
  std::memcpy(mem.data(), data + 4, std::min(size - 4, kMem));
  vmm::GuestMemory gm;
  gm.add_region(0x100000, kMem, mem.data());

  vmm::virtio::QueueConfig cfg;
  cfg.size = uint16_t(1u << (data[0] % 9));
  cfg.desc = 0x100000;
  cfg.avail = 0x100000 + 0x1000;
  cfg.used = 0x100000 + 0x2000;
  auto q = vmm::virtio::Virtqueue::create(gm, cfg, data[1] & 1, data[1] & 2);
  if (!q) return 0;

  vs::LunInfo info;
  info.blocks = 1 + data[2] * 1000ull;
  info.read_only = data[3] & 1;
  info.write_cache = data[3] & 2;
  info.unmap = data[3] & 4;
  info.granularity = 128;
  info.max_transfer = 256;
  info.max_unmap_blocks = 4096;
  info.max_unmap_descriptors = 8;
  info.serial = "fuzz";
  info.luns = {0, 1};
  // The driver may write cdb_size and sense_size: the device caps them (kMaxCdbSize ...).
  uint32_t cdb_size = (data[3] & 8) ? 16 : vs::kDefaultCdbSize;
  uint32_t sense_size = (data[3] & 16) ? 8 : vs::kDefaultSenseSize;

  for (int i = 0; i < 512; ++i) {
    auto head = q->pop_avail();
    if (!head || !*head) break;
    auto chain = q->read_chain(**head);
    if (!chain) {
      q->add_used(**head, 0);
      continue;
    }
    auto req = vs::parse_cmd_chain(*chain, cdb_size, sense_size);
    if (!req) {
      q->add_used(**head, 0);
      continue;
    }
    uint32_t used = req->resp.size;
    auto lun = vs::decode_lun(req->lun, 2);
    uint8_t response = lun ? vs::kSOk : vs::kSBadTarget;
    std::vector<uint8_t> sense;
    if (lun) {
      vs::Command c = vs::decode_cdb(req->cdb, *lun, info);
      using K = vs::Command::Kind;
      if (c.kind == K::kRead || c.kind == K::kWrite || c.kind == K::kWriteSame) {
        if (c.lba + c.blocks > info.blocks || c.lba + c.blocks < c.lba) __builtin_trap();
      }
      if ((c.kind == K::kRead || c.kind == K::kWrite) && c.blocks > info.max_transfer) {
        __builtin_trap();
      }
      if (c.reply.size() > 0xffff + 8 + 16 * 256) __builtin_trap();
      if (c.kind == K::kError) sense = vs::fixed_sense(c.sense);
      if (c.data_in() <= req->in_len) {
        auto in = vs::iov_prefix(req->data_in, c.data_in());
        for (const iovec& v : in) std::memset(v.iov_base, 0xa5, v.iov_len);
        used += static_cast<uint32_t>(c.data_in());
      }
      if (c.data_out <= req->out_len) {
        std::vector<uint8_t> out(c.data_out);
        vs::copy_from_iov(req->data_out, out);
        if (c.kind == K::kUnmap) {
          auto ranges = vs::parse_unmap_list(out, info);
          if (ranges) {
            for (const vs::UnmapRange& r : *ranges) {
              if (r.lba + r.blocks > info.blocks || r.blocks > info.max_unmap_blocks)
                __builtin_trap();
            }
          }
        }
      }
    }
    req->resp.write(vs::encode_cmd_resp(response, sense.empty() ? 0 : 2, 0, sense, sense_size));
    q->add_used(**head, used);
  }
  q->publish_used();
  return 0;
}
