#include "virtio/blk/blk_worker.h"

#include <algorithm>
#include <cstring>

#include "virtio/blk/blk_spec.h"

namespace vmm::virtio::blk {

BlkWorker::BlkWorker(img::IoLoop& loop, img::BlockDriver& disk, const Limits& limits,
                     std::string serial, std::vector<ActiveQueue> queues, VirtioInterrupt& irq,
                     BlkStats& stats)
    : disk_(disk),
      limits_(limits),
      serial_(std::move(serial)),
      stats_(stats),
      server_("virtio-blk", loop, std::move(queues), irq, *this) {}

BlkWorker::~BlkWorker() { server_.stop(); }

img::Status BlkWorker::handle_chain(uint16_t queue, DescriptorChain chain) {
  auto req = parse_request(chain, limits_);
  if (!req) {
    const ParseError& e = req.error();
    if (!e.status) return img::invalid_argument(e.why);  // no status byte: used length 0
    server_.log_guest_error("queue %u: request %u refused: %s", queue, chain.head, e.why.c_str());
    __atomic_store_n(e.status, e.code, __ATOMIC_RELAXED);  // ordered by the used index release
    server_.complete(queue, chain.head, 1);
    return {};
  }
  server_.loop().spawn(run_request(queue, chain.head, std::move(*req)));
  return {};
}

img::Status BlkWorker::resize(uint64_t new_size) {
  return server_.run_quiesced([this, new_size]() -> img::Task<img::Status> {
    img::Status s = co_await disk_.resize(new_size, {});
    limits_.capacity_sectors = disk_.size() / kSectorSize;
    if (!s) co_return s;
    co_return co_await disk_.flush();
  });
}

img::Task<img::Status> BlkWorker::quiesce() {
  co_await server_.wait_idle();
  co_return co_await disk_.flush();
}

img::Task<img::Status> BlkWorker::execute(Request& req) {
  switch (req.type) {
    case RequestType::kIn:
      co_return co_await disk_.readv(req.offset, req.iov);
    case RequestType::kOut:
      co_return co_await disk_.writev(req.offset, req.iov);
    case RequestType::kFlush:
      co_return co_await disk_.flush();
    case RequestType::kGetId: {
      // §5.2.6: up to 20 bytes, NUL-padded when the serial is shorter.
      uint8_t id[kIdBytes] = {};
      std::memcpy(id, serial_.data(), std::min<size_t>(serial_.size(), kIdBytes));
      size_t at = 0;
      for (const iovec& v : req.iov) {
        size_t n = std::min(v.iov_len, kIdBytes - at);
        std::memcpy(v.iov_base, id + at, n);
        at += n;
        if (at == kIdBytes) break;
      }
      co_return img::Status{};
    }
    case RequestType::kDiscard:
      for (const ZeroRange& r : req.ranges) {
        CO_RETURN_IF_ERROR(co_await disk_.discard(r.offset, r.length));
      }
      co_return img::Status{};
    case RequestType::kWriteZeroes:
      for (const ZeroRange& r : req.ranges) {
        CO_RETURN_IF_ERROR(co_await disk_.write_zeroes(r.offset, r.length, {.may_unmap = r.unmap}));
      }
      co_return img::Status{};
  }
  co_return img::Status{};
}

void BlkWorker::count(const Request& req, bool ok) {
  auto add = [](std::atomic<uint64_t>& c, uint64_t n) {
    c.fetch_add(n, std::memory_order_relaxed);
  };
  if (!ok) add(stats_.errors, 1);
  switch (req.type) {
    case RequestType::kIn:
      add(stats_.reads, 1);
      if (ok) add(stats_.read_bytes, req.data_len);
      break;
    case RequestType::kOut:
      add(stats_.writes, 1);
      if (ok) add(stats_.write_bytes, req.data_len);
      break;
    case RequestType::kFlush:
      add(stats_.flushes, 1);
      break;
    case RequestType::kDiscard:
      add(stats_.discards, 1);
      break;
    case RequestType::kWriteZeroes:
      add(stats_.write_zeroes, 1);
      break;
    case RequestType::kGetId:
      break;
  }
}

img::Task<void> BlkWorker::run_request(uint16_t queue, uint16_t head, Request req) {
  img::Status s = co_await execute(req);
  uint8_t code = kSOk;
  uint32_t len = used_length(req);
  if (!s) {
    server_.log_guest_error("queue %u: request %u: %s", queue, head, s.error().to_string().c_str());
    code = kSIoErr;
    len = 1;
  }
  count(req, s.has_value());
  __atomic_store_n(req.status, code, __ATOMIC_RELAXED);  // ordered by the used index release
  server_.complete(queue, head, len);
}

}  // namespace vmm::virtio::blk
