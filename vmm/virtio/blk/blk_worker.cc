#include "virtio/blk/blk_worker.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "virtio/blk/blk_spec.h"

namespace vmm::virtio::blk {

void log_guest_error(const char* fmt, ...) {
  // The first 100 lines, then one in 10000: a hostile guest must not flood the log.
  static std::atomic<uint64_t> count{0};
  uint64_t n = count.fetch_add(1);
  if (n >= 100 && n % 10000 != 0) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "virtio-blk: %s%s\n", buf, n >= 100 ? " (rate limited)" : "");
}

BlkWorker::BlkWorker(img::IoLoop& loop, img::BlockDriver& disk, const Limits& limits,
                     std::string serial, std::vector<ActiveQueue> queues, VirtioInterrupt& irq)
    : loop_(loop), disk_(disk), limits_(limits), serial_(std::move(serial)), irq_(irq) {
  for (auto& aq : queues) queues_.push_back(std::make_unique<QueueCtx>(QueueCtx{std::move(aq)}));
}

BlkWorker::~BlkWorker() { stop(); }

void BlkWorker::start() {
  stopping_.store(false);
  thread_ = std::thread([this] { thread_main(); });
}

void BlkWorker::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  // The queue eventfds are what the thread sleeps on; a kick wakes it to see the flag.
  for (auto& q : queues_) {
    uint64_t one = 1;
    ssize_t n = ::write(q->aq.kick_fd, &one, sizeof one);
    (void)n;
  }
  loop_.wake();
  thread_.join();
}

void BlkWorker::thread_main() {
  for (auto& q : queues_) loop_.spawn(serve_queue(*q));
  // Runs until every queue coroutine has seen the stop flag and every request has completed.
  while (loop_.spawned_running() > 0) loop_.run_once(true);
}

img::Task<void> BlkWorker::serve_queue(QueueCtx& q) {
  drain_avail(q);  // buffers made available before the first notification
  while (!stopping_.load(std::memory_order_acquire)) {
    int r = co_await loop_.poll(q.aq.kick_fd, POLLIN);
    if (r < 0) {
      log_guest_error("queue %u: poll on notification eventfd: %s", q.aq.index, strerror(-r));
      break;
    }
    uint64_t count;
    ssize_t n = ::read(q.aq.kick_fd, &count, sizeof count);
    (void)n;
    if (stopping_.load(std::memory_order_acquire)) break;
    drain_avail(q);
  }
}

void BlkWorker::drain_avail(QueueCtx& q) {
  Virtqueue& vq = q.aq.queue;
  while (!q.broken) {
    vq.disable_notifications();
    while (true) {
      auto head = vq.pop_avail();
      if (!head) {
        q.broken = true;
        irq_.device_error(
            img::strfmt("virtio-blk queue %u: %s", q.aq.index, head.error().to_string().c_str()));
        return;
      }
      if (!*head) break;
      handle_chain(q, **head);
    }
    if (!vq.enable_notifications()) return;
  }
}

void BlkWorker::handle_chain(QueueCtx& q, uint16_t head) {
  auto chain = q.aq.queue.read_chain(head);
  if (!chain) {
    log_guest_error("queue %u: chain %u dropped: %s", q.aq.index, head,
                    chain.error().to_string().c_str());
    complete(q, head, 0);
    return;
  }
  auto req = parse_request(*chain, limits_);
  if (!req) {
    const ParseError& e = req.error();
    log_guest_error("queue %u: request %u refused: %s", q.aq.index, head, e.why.c_str());
    if (e.status) {
      __atomic_store_n(e.status, e.code, __ATOMIC_RELAXED);
      complete(q, head, 1);
    } else {
      complete(q, head, 0);
    }
    return;
  }
  loop_.spawn(run_request(q, head, std::move(*req)));
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

img::Task<void> BlkWorker::run_request(QueueCtx& q, uint16_t head, Request req) {
  img::Status s = co_await execute(req);
  uint8_t code = kSOk;
  uint32_t len = used_length(req);
  if (!s) {
    log_guest_error("queue %u: request %u: %s", q.aq.index, head, s.error().to_string().c_str());
    code = kSIoErr;
    len = 1;
  }
  __atomic_store_n(req.status, code, __ATOMIC_RELAXED);  // ordered by the used index release
  complete(q, head, len);
}

void BlkWorker::complete(QueueCtx& q, uint16_t head, uint32_t len) {
  q.aq.queue.add_used(head, len);
  if (!q.publish_scheduled) {
    q.publish_scheduled = true;
    loop_.spawn(publish_later(q));
  }
}

img::Task<void> BlkWorker::publish_later(QueueCtx& q) {
  // Runs on the next turn of the loop, after every completion that arrived with this one.
  co_await loop_.yield();
  q.publish_scheduled = false;
  if (q.aq.queue.publish_used()) irq_.signal_used(q.aq.index);
}

}  // namespace vmm::virtio::blk
