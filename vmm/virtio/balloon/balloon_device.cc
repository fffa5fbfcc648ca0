#include "virtio/balloon/balloon_device.h"

#include <cerrno>
#include <cstring>
#include <optional>

#include "virtio/balloon/host_pages.h"
#include "virtio/buffers.h"
#include "virtio/queue_server.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::balloon {

std::expected<std::vector<uint32_t>, std::string> parse_pfns(const DescriptorChain& chain) {
  constexpr uint32_t kCap = kMaxPfnsPerChain * 4;
  auto b = collect_buffers(chain, BufferDirection::kDeviceReads, kCap + 1);
  if (!b) return std::unexpected(b.error());
  if (b->truncated || b->total > kCap) {
    return std::unexpected(img::strfmt("more than %u PFNs in one chain", kMaxPfnsPerChain));
  }
  if (b->total % 4 != 0) return std::unexpected("PFN array length is not a multiple of 4");
  std::vector<uint8_t> bytes(b->total);
  size_t at = 0;
  for (std::span<uint8_t> s : b->spans) {
    std::memcpy(bytes.data() + at, s.data(), s.size());
    at += s.size();
  }
  std::vector<uint32_t> pfns(b->total / 4);
  std::memcpy(pfns.data(), bytes.data(), bytes.size());  // le32, little-endian host
  return pfns;
}

class BalloonWorker final : public ChainHandler {
 public:
  BalloonWorker(BalloonDevice& dev, img::IoLoop& loop, const GuestMemory& mem,
                std::vector<ActiveQueue> queues, VirtioInterrupt& irq)
      : dev_(dev), mem_(mem), server_("virtio-balloon", loop, std::move(queues), irq, *this) {}
  ~BalloonWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }

  void started(QueueServer& s) override {
    if (dev_.opts_.stats_interval.count() > 0) s.loop().spawn(ask_for_stats());
  }

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    if (queue == kInflateQueue || queue == kDeflateQueue) {
      auto pfns = parse_pfns(chain);
      if (!pfns) return img::invalid_argument(pfns.error());
      if (queue == kInflateQueue) {
        give_back(*pfns);
      } else {
        take_back(*pfns);
      }
      server_.complete(queue, chain.head, 0);
      return {};
    }
    if (queue == kStatsQueue) {
      auto b = collect_buffers(chain, BufferDirection::kDeviceReads, 64 * kStatEntrySize);
      if (!b) return img::invalid_argument("stats: " + b.error());
      std::vector<uint8_t> bytes;
      for (std::span<uint8_t> s : b->spans) bytes.insert(bytes.end(), s.begin(), s.end());
      {
        std::lock_guard l(dev_.stats_mu_);
        for (size_t i = 0; i + kStatEntrySize <= bytes.size(); i += kStatEntrySize) {
          uint16_t tag;
          uint64_t val;
          std::memcpy(&tag, &bytes[i], 2);
          std::memcpy(&val, &bytes[i + 2], 8);
          dev_.stats_[tag] = val;
        }
      }
      if (stats_head_) server_.complete(kStatsQueue, *stats_head_, 0);  // a driver bug: two
      stats_head_ = chain.head;  // kept until the device wants fresh stats (§5.5.6.3)
      return {};
    }
    return img::invalid_argument(img::strfmt("no queue %u", queue));
  }

  void stopping() override { stats_head_.reset(); }  // dropped: the driver resets the queue

 private:
  // Discards runs of consecutive PFNs with one madvise each; PFNs in huge pages go through
  // host_pages_ (a huge page goes back once all of it is in the balloon).
  void give_back(const std::vector<uint32_t>& pfns) {
    size_t i = 0;
    while (i < pfns.size()) {
      if (mem_.host_page_size(uint64_t{pfns[i]} * kPageSize) != kPageSize) {
        give_back_one(pfns[i++]);
        continue;
      }
      size_t j = i + 1;
      while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1 && j - i < kMaxPfnsPerChain) ++j;
      uint64_t n = j - i;
      if (mem_.discard(uint64_t{pfns[i]} * kPageSize, n * kPageSize)) {
        dev_.discarded_ += n;
      } else {
        // Maybe only part of the run is outside RAM: page by page, to give back what is ours.
        for (size_t k = i; k < j; ++k) give_back_one(pfns[k]);
      }
      i = j;
    }
    dev_.partial_host_pages_ = host_pages_.partial();
  }

  void give_back_one(uint32_t pfn) {
    const uint64_t gpa = uint64_t{pfn} * kPageSize;
    const uint64_t host_page = mem_.host_page_size(gpa);
    if (host_page == kPageSize && mem_.discard(gpa, kPageSize)) {
      dev_.discarded_ += 1;
      return;
    }
    if (host_page <= kPageSize) {
      dev_.bad_pfns_ += 1;
      server_.log_guest_error("inflate: PFN 0x%x is not a page of guest RAM", pfn);
      return;
    }
    if (!host_pages_.inflate(gpa, host_page)) return;  // its huge page is not all ballooned yet
    const uint64_t base = gpa & ~(host_page - 1);
    if (mem_.discard(base, host_page)) {
      dev_.discarded_ += host_page / kPageSize;
    } else {
      server_.log_guest_error("inflate: the host kept the %llu KiB page at 0x%llx (madvise: %s)",
                              (unsigned long long)(host_page >> 10), (unsigned long long)base,
                              std::strerror(errno));
    }
  }

  void take_back(const std::vector<uint32_t>& pfns) {
    for (uint32_t pfn : pfns) {
      const uint64_t gpa = uint64_t{pfn} * kPageSize;
      const uint64_t host_page = mem_.host_page_size(gpa);
      if (host_page > kPageSize) host_pages_.deflate(gpa, host_page);
    }
    dev_.partial_host_pages_ = host_pages_.partial();
  }

  img::Task<void> ask_for_stats() {
    while (!server_.stopping()) {
      bool slept = co_await server_.sleep_for(dev_.opts_.stats_interval);  // gcc 12: not in if
      if (!slept) break;
      if (stats_head_) {
        server_.complete(kStatsQueue, *stats_head_, 0);
        stats_head_.reset();
      }
    }
  }

  BalloonDevice& dev_;
  const GuestMemory& mem_;
  std::optional<uint16_t> stats_head_;
  HostPages host_pages_;  // a reset forgets the balloon: the worker goes with the queues
  QueueServer server_;    // last: stopped before the members above go
};

img::Result<std::unique_ptr<BalloonDevice>> BalloonDevice::create(const BalloonOptions& opts,
                                                                  img::IoLoop::Options loop_opts) {
  if (opts.queue_size < 1 || opts.queue_size > kMaxQueueSize) {
    return img::invalid_argument(img::strfmt("virtio-balloon: queue size %u", opts.queue_size));
  }
  if (opts.num_pages > UINT32_MAX) return img::invalid_argument("virtio-balloon: target too large");
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  return std::unique_ptr<BalloonDevice>(new BalloonDevice(std::move(loop), opts));
}

BalloonDevice::BalloonDevice(std::unique_ptr<img::IoLoop> loop, const BalloonOptions& opts)
    : loop_(std::move(loop)), opts_(opts), num_pages_(static_cast<uint32_t>(opts.num_pages)) {}

BalloonDevice::~BalloonDevice() { reset(); }

uint16_t BalloonDevice::device_type() const { return kDeviceIdBalloon; }

uint64_t BalloonDevice::device_features() const {
  return feature(kFStatsVq) | feature(kFDeflateOnOom);
}

void BalloonDevice::set_num_pages(uint32_t pages) {
  num_pages_.store(pages);
  std::lock_guard l(irq_mu_);
  if (irq_) irq_->signal_config_change();
}

std::map<uint16_t, uint64_t> BalloonDevice::stats() const {
  std::lock_guard l(stats_mu_);
  return stats_;
}

void BalloonDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  uint8_t c[cfg::kSize];
  uint32_t n = num_pages_.load(), a = actual_.load();
  std::memcpy(c + cfg::kNumPages, &n, 4);
  std::memcpy(c + cfg::kActual, &a, 4);
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = uint64_t{offset} + i;
    data[i] = at < cfg::kSize ? c[at] : 0;
  }
}

void BalloonDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  // §5.5.4: only actual is the driver's to write.
  uint8_t c[4];
  uint32_t a = actual_.load();
  std::memcpy(c, &a, 4);
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = uint64_t{offset} + i;
    if (at >= cfg::kActual && at < cfg::kActual + 4) c[at - cfg::kActual] = data[i];
  }
  std::memcpy(&a, c, 4);
  actual_.store(a);
}

img::Status BalloonDevice::activate(ActivateArgs args) {
  reset();
  {
    std::lock_guard l(irq_mu_);
    irq_ = args.irq;
  }
  worker_ =
      std::make_unique<BalloonWorker>(*this, *loop_, *args.mem, std::move(args.queues), *args.irq);
  return worker_->start();
}

img::Status BalloonDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void BalloonDevice::resume() {
  if (worker_) worker_->resume();
}

void BalloonDevice::reset() {
  worker_.reset();
  partial_host_pages_.store(0);
  actual_.store(0);  // a reset driver holds no pages (§5.5.6.1: it starts with an empty balloon)
  std::lock_guard l(irq_mu_);
  irq_ = nullptr;
}

}  // namespace vmm::virtio::balloon
