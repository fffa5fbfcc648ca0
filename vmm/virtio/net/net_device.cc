#include "virtio/net/net_device.h"

#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <vector>

#include "virtio/net/net_request.h"
#include "virtio/net/net_spec.h"
#include "virtio/queue_server.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::net {
namespace {

bool has(uint64_t features, unsigned bit) { return features & feature(bit); }

// Packets taken from the tap per loop turn before the other coroutines get their go: the used
// ring is published (one interrupt) and transmit keeps moving under a receive flood.
constexpr unsigned kRxBatch = 64;

}  // namespace

Mac stable_mac(const std::string& seed) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : "vmm-net:" + seed) h = (h ^ c) * 1099511628211ull;
  Mac m;
  m[0] = 0x02;  // locally administered, unicast
  for (int i = 1; i < 6; ++i) m[i] = static_cast<uint8_t>(h >> (8 * i));
  return m;
}

std::string format_mac(const Mac& m) {
  return img::strfmt("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

class NetWorker final : public ChainHandler {
 public:
  NetWorker(img::IoLoop& loop, Tap& tap, uint64_t features, std::vector<ActiveQueue> queues,
            VirtioInterrupt& irq, NetStats& stats)
      : tap_(tap),
        stats_(stats),
        features_(features),
        mrg_(has(features, kFMrgRxbuf)),
        tx_ready_(loop),
        rx_ready_(loop),
        server_("virtio-net", loop, std::move(queues), irq, *this) {}
  ~NetWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }

  void started(QueueServer& s) override {
    s.loop().spawn(writer());
    s.loop().spawn(reader());
  }

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    if (queue == kTxQueue) {
      auto p = parse_tx(chain, features_);
      if (!p) {
        bump(stats_.tx_errors);
        return img::invalid_argument("transmit: " + p.error());
      }
      if (tx_.empty() && send(*p) != -EAGAIN) {
        server_.complete(kTxQueue, chain.head, 0);  // §5.1.6.2: the device writes nothing back
        return {};
      }
      tx_.push_back({chain.head, std::move(*p)});
      tx_ready_.notify();
      return {};
    }
    if (queue == kRxQueue) {
      auto b = parse_rx(chain);
      if (!b) return img::invalid_argument("receive: " + b.error());
      rx_.push_back({chain.head, std::move(*b)});
      rx_ready_.notify();
      return {};
    }
    return img::invalid_argument(img::strfmt("no queue %u without a control queue", queue));
  }

  void stopping() override {
    tx_.clear();  // dropped: after a reset the driver forgets them
    rx_.clear();
    tx_ready_.notify();
    rx_ready_.notify();
  }

 private:
  struct PendingTx {
    uint16_t head;
    TxPacket packet;
  };
  struct PendingRx {
    uint16_t head;
    Buffers bufs;
  };

  // One writev: our validated copy of the header, then the guest's buffers. 0, -EAGAIN, or
  // another error, logged (the frame is dropped, as a NIC drops what the wire refuses).
  long send(const TxPacket& p) {
    iov_.clear();
    iov_.push_back({const_cast<uint8_t*>(p.header.data()), p.header.size()});
    for (std::span<const uint8_t> s : p.frame) {
      iov_.push_back({const_cast<uint8_t*>(s.data()), s.size()});
    }
    int n = static_cast<int>(iov_.size());  // at most queue size + 1 <= IOV_MAX (create())
    for (;;) {
      ssize_t r = ::writev(tap_.fd(), iov_.data(), n);
      if (r >= 0) {
        bump(stats_.tx_packets);
        bump(stats_.tx_bytes, p.frame_len);
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return -EAGAIN;
      int e = errno;
      bump(stats_.tx_dropped);
      server_.log_guest_error("transmit: writev to tap %s: %s", tap_.name().c_str(), strerror(e));
      return -e;
    }
  }

  img::Task<void> writer() {
    while (!server_.stopping()) {
      if (tx_.empty()) {
        co_await tx_ready_.wait();
        continue;
      }
      if (send(tx_.front().packet) == -EAGAIN) {
        bool ok = co_await server_.wait(tap_.fd(), POLLOUT);  // gcc 12: not inside the if
        if (!ok) break;
        continue;
      }
      if (tx_.empty()) break;  // stopping() ran meanwhile
      server_.complete(kTxQueue, tx_.front().head, 0);
      tx_.pop_front();
    }
  }

  // How many parked buffers the packet needs, or 0 when those parked do not hold it yet.
  size_t buffers_for(uint32_t len) const {
    uint64_t room = 0;
    for (size_t i = 0; i < rx_.size(); ++i) {
      room += rx_[i].bufs.total;
      if (room >= len) return i + 1;
      if (!mrg_) return 0;
    }
    return 0;
  }

  img::Task<void> reader() {
    std::vector<uint8_t> pkt(kMaxPacket);
    uint32_t len = 0;  // a packet read and not yet delivered
    unsigned batch = 0;
    while (!server_.stopping()) {
      if (rx_.empty()) {
        co_await rx_ready_.wait();
        continue;
      }
      if (len == 0) {
        ssize_t n = ::read(tap_.fd(), pkt.data(), pkt.size());
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          bool readable = co_await server_.wait(tap_.fd(), POLLIN);  // gcc 12: not in the if
          if (!readable) break;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          // The tap went away (or a stand-in's peer closed): the link is down for good, the
          // parked buffers stay with the device until the driver resets it.
          server_.log_guest_error("receive: tap %s: %s", tap_.name().c_str(),
                                  n == 0 ? "end of input" : strerror(errno));
          break;
        }
        if (static_cast<uint32_t>(n) < hdr::kSize + kMinFrame) {
          bump(stats_.rx_dropped);
          server_.log_guest_error("receive: %zd-byte packet from the tap dropped", n);
          continue;
        }
        len = static_cast<uint32_t>(n);
      }
      size_t need = buffers_for(len);
      if (need == 0 && !mrg_) {
        bump(stats_.rx_dropped);
        server_.log_guest_error(
            "receive: %u-byte packet dropped: the %u-byte buffer is too small "
            "(no MRG_RXBUF)",
            len, rx_.front().bufs.total);
        len = 0;
        continue;
      }
      if (need == 0) {
        co_await rx_ready_.wait();  // the packet waits for more buffers
        continue;
      }
      bufs_.resize(need);
      used_.resize(need);
      for (size_t i = 0; i < need; ++i) bufs_[i] = &rx_[i].bufs;
      scatter_packet(std::span(pkt.data(), len), bufs_, used_);
      for (size_t i = 0; i < need; ++i) {
        server_.complete(kRxQueue, rx_.front().head, used_[i]);
        rx_.pop_front();
      }
      bump(stats_.rx_packets);
      bump(stats_.rx_bytes, len - hdr::kSize);
      len = 0;
      if (++batch % kRxBatch == 0) co_await server_.loop().yield();
    }
  }

  // One writer thread: a relaxed load and store, no locked read-modify-write.
  static void bump(std::atomic<uint64_t>& c, uint64_t by = 1) {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  Tap& tap_;
  NetStats& stats_;
  const uint64_t features_;
  const bool mrg_;
  std::deque<PendingTx> tx_;
  std::deque<PendingRx> rx_;
  LoopEvent tx_ready_, rx_ready_;
  std::vector<iovec> iov_;            // reused by send()
  std::vector<const Buffers*> bufs_;  // reused by reader()
  std::vector<uint32_t> used_;
  QueueServer server_;  // last: stopped before the members above go
};

img::Result<std::unique_ptr<NetDevice>> NetDevice::create(const NetOptions& opts,
                                                          img::IoLoop::Options loop_opts) {
  // A chain is at most the queue size (queue.cc), and writev takes IOV_MAX (1024) buffers, one of
  // them our header copy.
  if (opts.queue_size < 2 || opts.queue_size > IOV_MAX - 1) {
    return img::invalid_argument(img::strfmt("virtio-net: queue size %u", opts.queue_size));
  }
  if (opts.mac && ((*opts.mac)[0] & 1)) {
    return img::invalid_argument("virtio-net: " + format_mac(*opts.mac) +
                                 " is a multicast address");
  }
  ASSIGN_OR_RETURN(auto tap, Tap::open(opts.tap));
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  Mac mac = opts.mac ? *opts.mac : stable_mac(tap->name());
  return std::unique_ptr<NetDevice>(
      new NetDevice(std::move(loop), std::move(tap), mac, opts.queue_size));
}

NetDevice::NetDevice(std::unique_ptr<img::IoLoop> loop, std::unique_ptr<Tap> tap, Mac mac,
                     uint16_t queue_size)
    : loop_(std::move(loop)), tap_(std::move(tap)), mac_(mac), queue_size_(queue_size) {}

NetDevice::~NetDevice() { reset(); }

uint16_t NetDevice::device_type() const { return kDeviceIdNet; }

uint64_t NetDevice::device_features() const {
  uint64_t f = feature(kFMac) | feature(kFStatus) | feature(kFMrgRxbuf);
  uint32_t off = tap_->supported_offloads();
  if (off & kTunFCsum) f |= feature(kFCsum) | feature(kFGuestCsum);
  if ((off & kTunFCsum) && (off & kTunFTso4)) f |= feature(kFHostTso4) | feature(kFGuestTso4);
  if ((off & kTunFCsum) && (off & kTunFTso6)) f |= feature(kFHostTso6) | feature(kFGuestTso6);
  if ((off & kTunFCsum) && (off & (kTunFTso4 | kTunFTso6)) && (off & kTunFTsoEcn)) {
    f |= feature(kFHostEcn) | feature(kFGuestEcn);
  }
  return f;
}

bool NetDevice::accept_features(uint64_t f) const {
  // §5.1.3.1 Feature bit requirements.
  bool guest_tso = has(f, kFGuestTso4) || has(f, kFGuestTso6);
  bool host_tso = has(f, kFHostTso4) || has(f, kFHostTso6);
  if (guest_tso && !has(f, kFGuestCsum)) return false;
  if (has(f, kFGuestEcn) && !guest_tso) return false;
  if (host_tso && !has(f, kFCsum)) return false;
  if (has(f, kFHostEcn) && !host_tso) return false;
  return true;
}

uint32_t NetDevice::config_size() const { return cfg::kSize; }

void NetDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  uint8_t c[cfg::kSize] = {};
  std::memcpy(c + cfg::kMac, mac_.data(), 6);
  c[cfg::kStatus] = kStatusLinkUp;  // little-endian le16
  c[cfg::kMaxVirtqueuePairs] = 1;
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t at = uint64_t{offset} + i;
    data[i] = at < cfg::kSize ? c[at] : 0;
  }
}

img::Status NetDevice::activate(ActivateArgs args) {
  reset();
  uint32_t off = 0;
  if (has(args.features, kFGuestCsum)) off |= kTunFCsum;
  if (has(args.features, kFGuestTso4)) off |= kTunFTso4;
  if (has(args.features, kFGuestTso6)) off |= kTunFTso6;
  if (has(args.features, kFGuestEcn)) off |= kTunFTsoEcn;
  RETURN_IF_ERROR(tap_->set_offloads(off));
  worker_ = std::make_unique<NetWorker>(*loop_, *tap_, args.features, std::move(args.queues),
                                        *args.irq, stats_);
  return worker_->start();
}

// VM pause: no new transmit or receive chains are taken; receive buffers the worker already
// holds stay parked and may still be filled by frames from the tap (as parked console input is).
img::Status NetDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void NetDevice::resume() {
  if (worker_) worker_->resume();
}

void NetDevice::reset() { worker_.reset(); }

}  // namespace vmm::virtio::net
