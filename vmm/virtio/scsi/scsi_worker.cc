#include "virtio/scsi/scsi_worker.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "virtio/disk_resize.h"
#include "virtio/scsi/scsi_spec.h"

namespace vmm::virtio::scsi {
namespace {

constexpr uint32_t kWriteSameChunkBlocks = 128;  // 64 KiB of the repeated block per write
constexpr std::chrono::microseconds kTmfPoll{100};

}  // namespace

ScsiWorker::ScsiWorker(img::IoLoop& loop, std::vector<WorkerLun> luns, uint32_t cdb_size,
                       uint32_t sense_size, std::vector<ActiveQueue> queues, VirtioInterrupt& irq,
                       bool change_events)
    : luns_(std::move(luns)),
      cdb_size_(cdb_size),
      sense_size_(sense_size),
      in_flight_(luns_.size()),
      unit_attention_(luns_.size(), false),
      change_events_(change_events),
      server_("virtio-scsi", loop, std::move(queues), irq, *this) {}

img::Status ScsiWorker::handle_chain(uint16_t queue, DescriptorChain chain) {
  if (queue == kEventQueue) {
    // §5.6.6.3: the driver gives the device buffers for events; they wait for one.
    auto b = collect_buffers(chain, BufferDirection::kDeviceWrites, kEventSize);
    if (!b) return img::invalid_argument("event buffer: " + b.error());
    if (b->total < kEventSize) {
      return img::invalid_argument(
          img::strfmt("event buffer of %u bytes, not %u", b->total, kEventSize));
    }
    parked_events_.push_back({chain.head, std::move(*b)});
    deliver_events();
    return {};
  }
  if (queue == kControlQueue) {
    auto req = parse_ctrl_chain(chain);
    if (!req) return img::invalid_argument(req.error());
    server_.loop().spawn(run_control(chain.head, std::move(*req)));
    return {};
  }
  auto req = parse_cmd_chain(chain, cdb_size_, sense_size_);
  if (!req) return img::invalid_argument(req.error());
  server_.loop().spawn(run_command(queue, chain.head, std::move(*req)));
  return {};
}

bool ScsiWorker::busy(int lun, std::optional<uint64_t> tag) const {
  for (size_t l = 0; l < in_flight_.size(); ++l) {
    if (lun >= 0 && size_t(lun) != l) continue;
    if (!tag ? !in_flight_[l].empty() : in_flight_[l].count(*tag) > 0) return true;
  }
  return false;
}

img::Task<void> ScsiWorker::run_control(uint16_t head, CtrlRequest req) {
  uint8_t resp[kAnRespSize] = {};  // AN: event_actual 0 (no events), response
  if (req.type != kTTmf) {
    auto lun = decode_lun(req.lun, static_cast<uint16_t>(luns_.size()));
    resp[4] = lun ? kSOk : kSBadTarget;
    req.resp.write(resp);
    server_.complete(kControlQueue, head, kAnRespSize);
    co_return;
  }
  auto lun = decode_lun(req.lun, static_cast<uint16_t>(luns_.size()));
  uint8_t r = kSFunctionRejected;
  if (!lun) {
    r = kSBadTarget;
  } else {
    int l = *lun;
    std::optional<uint64_t> tag;
    bool wait = true;
    switch (req.subtype) {
      case kTmfAbortTask:
        tag = req.tag;
        break;
      case kTmfAbortTaskSet:
      case kTmfClearTaskSet:
      case kTmfLogicalUnitReset:
        break;
      case kTmfITNexusReset:
        l = -1;  // every LUN of the nexus
        break;
      case kTmfQueryTask:
      case kTmfQueryTaskSet:
        wait = false;
        r = busy(l, req.subtype == kTmfQueryTask ? std::optional(req.tag) : std::nullopt)
                ? kSFunctionSucceeded
                : kSFunctionComplete;
        break;
      default:  // CLEAR ACA (NACA is refused, so there is never an ACA) and unknown functions
        wait = false;
        r = kSFunctionRejected;
        break;
    }
    if (wait) {
      bool alive = true;
      while (alive && busy(l, tag)) {
        alive = co_await server_.sleep_for(kTmfPoll);  // not in the condition: gcc 12
      }
      if (!alive) co_return;  // reset: the chain is dropped with the queue
      r = kSFunctionComplete;
    }
  }
  req.resp.write(std::span<const uint8_t>(&r, 1));
  server_.complete(kControlQueue, head, 1);
}

img::Task<void> ScsiWorker::run_command(uint16_t queue, uint16_t head, CmdRequest req) {
  auto lun = decode_lun(req.lun, static_cast<uint16_t>(luns_.size()));
  Outcome o;
  if (!lun) {
    o.response = kSBadTarget;
  } else {
    uint8_t opcode = req.cdb.empty() ? 0 : req.cdb[0];
    if (unit_attention_[*lun] && opcode != op::kInquiry && opcode != op::kReportLuns &&
        opcode != op::kRequestSense) {
      // SPC-4 §5.14: reported once, by the first command it applies to.
      unit_attention_[*lun] = false;
      o.status = kStatusCheckCondition;
      o.sense = {kKeyUnitAttention, kAscParametersChanged, kAscqCapacityChanged};
    } else {
      auto& flight = in_flight_[*lun];
      ++flight[req.tag];
      Command c = decode_cdb(req.cdb, *lun, luns_[*lun].info);
      o = co_await execute(luns_[*lun], c, req);
      if (--flight[req.tag] == 0) flight.erase(req.tag);
    }
  }
  std::vector<uint8_t> sense;
  if (o.status == kStatusCheckCondition) sense = fixed_sense(o.sense);
  uint64_t moved = std::max(o.data_in, o.data_out);
  uint64_t offered = std::max(req.in_len, req.out_len);
  uint32_t resid =
      static_cast<uint32_t>(std::min<uint64_t>(offered - std::min(offered, moved), UINT32_MAX));
  req.resp.write(encode_cmd_resp(o.response, o.status, resid, sense, sense_size_));
  uint64_t used = req.resp.size + o.data_in;
  server_.complete(queue, head, static_cast<uint32_t>(std::min<uint64_t>(used, UINT32_MAX)));
}

img::Task<ScsiWorker::Outcome> ScsiWorker::execute(WorkerLun& lun, const Command& c,
                                                   CmdRequest& req) {
  using K = Command::Kind;
  Outcome o;
  auto check = [&o](Sense s) {
    o.status = kStatusCheckCondition;
    o.sense = s;
    return o;
  };
  if (c.kind == K::kError) co_return check(c.sense);
  // Parse, then act: the buffers must hold what the CDB says, in the right direction, before
  // any I/O. Bidirectional commands are not offered (no VIRTIO_SCSI_F_INOUT).
  bool writes = c.kind == K::kWrite || c.kind == K::kUnmap || c.kind == K::kWriteSame;
  if ((writes && req.in_len) || (!writes && req.out_len)) {
    server_.log_guest_error("command 0x%02x with data buffers the wrong way", req.cdb[0]);
    o.response = kSFailure;
    co_return o;
  }
  if (c.kind == K::kRead ? c.data_in() > req.in_len : c.data_out > req.out_len) {
    server_.log_guest_error("command 0x%02x needs more data than the chain holds", req.cdb[0]);
    o.response = kSOverrun;
    co_return o;
  }
  uint64_t off = c.lba * kBlockSize;  // lba + blocks <= capacity: no overflow
  uint64_t len = uint64_t{c.blocks} * kBlockSize;
  switch (c.kind) {
    case K::kReply:
      o.data_in = copy_to_iov(req.data_in, c.reply);
      co_return o;
    case K::kRead: {
      if (len) {
        img::Status s = co_await lun.disk->readv(off, iov_prefix(req.data_in, len));
        if (!s) {
          server_.log_guest_error("read at %llu: %s", (unsigned long long)off,
                                  s.error().to_string().c_str());
          co_return check(medium_error(false));
        }
      }
      o.data_in = len;
      co_return o;
    }
    case K::kWrite:
    case K::kWriteSame:
    case K::kUnmap: {
      img::Status s;
      if (c.kind == K::kWrite) {
        if (len) s = co_await lun.disk->writev(off, iov_prefix(req.data_out, len));
        o.data_out = len;
      } else if (c.kind == K::kWriteSame) {
        s = co_await write_same(lun, c, req);
        o.data_out = c.data_out;
      } else {
        std::vector<uint8_t> list(c.data_out);
        copy_from_iov(req.data_out, list);  // copied out of guest memory, then checked
        o.data_out = c.data_out;
        auto ranges = parse_unmap_list(list, lun.info);
        if (!ranges) co_return check(ranges.error());
        // Unmap by writing zeroes that may unmap: the blocks read as zeros afterwards (LBPRZ),
        // even where a plain discard would expose a backing file.
        for (const UnmapRange& r : *ranges) {
          if (!s) break;
          s = co_await lun.disk->write_zeroes(r.lba * kBlockSize, uint64_t{r.blocks} * kBlockSize,
                                              {.may_unmap = true});
        }
      }
      if (s && (c.fua || !lun.info.write_cache)) s = co_await lun.disk->flush();
      if (!s) {
        server_.log_guest_error("write at %llu: %s", (unsigned long long)off,
                                s.error().to_string().c_str());
        co_return check(medium_error(true));
      }
      co_return o;
    }
    case K::kSync: {
      img::Status s = co_await lun.disk->flush();
      if (!s) co_return check(medium_error(true));
      co_return o;
    }
    case K::kError:
      break;
  }
  co_return o;
}

img::Task<img::Status> ScsiWorker::write_same(WorkerLun& lun, const Command& c, CmdRequest& req) {
  std::vector<uint8_t> block(kBlockSize, 0);
  if (!c.ndob) copy_from_iov(req.data_out, block);
  uint64_t off = c.lba * kBlockSize;
  uint64_t len = uint64_t{c.blocks} * kBlockSize;
  if (std::all_of(block.begin(), block.end(), [](uint8_t b) { return b == 0; })) {
    co_return co_await lun.disk->write_zeroes(off, len, {.may_unmap = c.unmap});
  }
  // SBC-3 §5.46: a non-zero block is written to every LBA (UNMAP then only permits unmapping
  // where reads would return the same data, which never holds for non-zero data).
  uint32_t chunk = std::min(c.blocks, kWriteSameChunkBlocks);
  std::vector<uint8_t> buf(uint64_t{chunk} * kBlockSize);
  for (uint32_t i = 0; i < chunk; ++i) std::memcpy(&buf[i * kBlockSize], block.data(), kBlockSize);
  for (uint64_t done = 0; done < len;) {
    uint64_t n = std::min<uint64_t>(buf.size(), len - done);
    CO_RETURN_IF_ERROR(co_await lun.disk->write(off + done, buf.data(), n));
    done += n;
  }
  co_return img::Status{};
}

img::Task<img::Status> ScsiWorker::quiesce() {
  co_await server_.wait_idle();
  for (WorkerLun& lun : luns_) {
    if (lun.info.read_only) continue;
    img::Status s = co_await lun.disk->flush();
    if (!s) co_return s;
  }
  co_return img::Status{};
}

}  // namespace vmm::virtio::scsi

namespace vmm::virtio::scsi {

void ScsiWorker::deliver_events() {
  while (!pending_events_.empty() && !parked_events_.empty()) {
    size_t lun = pending_events_.front();
    pending_events_.erase(pending_events_.begin());
    EventBuffer e = std::move(parked_events_.front());
    parked_events_.erase(parked_events_.begin());
    uint8_t ev[kEventSize] = {};
    uint32_t type = kEventParamChange;
    std::memcpy(ev, &type, 4);
    // §5.6.6.1's LUN format: 1, target, then the flat-space LUN (0x40 | hi, lo).
    ev[4] = 1;
    ev[6] = static_cast<uint8_t>(0x40 | (lun >> 8));
    ev[7] = static_cast<uint8_t>(lun & 0xff);
    uint32_t reason = kAscParametersChanged | (uint32_t{kAscqCapacityChanged} << 8);
    std::memcpy(ev + 12, &reason, 4);
    uint32_t n = copy_into(e.bufs, ev);
    server_.complete(kEventQueue, e.head, n);
  }
}

img::Status ScsiWorker::resize(size_t lun, uint64_t new_size) {
  return server_.run_quiesced([this, lun, new_size]() -> img::Task<img::Status> {
    WorkerLun& l = luns_[lun];
    img::Status s = co_await grow_and_flush(*l.disk, new_size);
    uint64_t blocks = l.disk->size() / kBlockSize;
    if (blocks != l.info.blocks) {
      l.info.blocks = blocks;
      unit_attention_[lun] = true;
      if (change_events_ &&
          std::find(pending_events_.begin(), pending_events_.end(), lun) == pending_events_.end()) {
        pending_events_.push_back(lun);
        deliver_events();
      }
    }
    co_return s;
  });
}

}  // namespace vmm::virtio::scsi
