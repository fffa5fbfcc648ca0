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

#include "virtio/scsi/cdb.h"
#include "virtio/scsi/request.h"
#include "virtio/scsi/scsi_spec.h"
#include "virtio_fuzz_rig.h"

namespace {
constexpr size_t kMem = 64 * 1024;
namespace vs = vmm::virtio::scsi;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto rig = vmm::fuzz::VirtioFuzzRig::make(data, size, kMem);
  if (!rig) return 0;

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

  rig->for_each_chain([&](const vmm::virtio::DescriptorChain& chain) -> uint32_t {
    auto req = vs::parse_cmd_chain(chain, cdb_size, sense_size);
    if (!req) return 0;
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
    return used;
  });
  return 0;
}
