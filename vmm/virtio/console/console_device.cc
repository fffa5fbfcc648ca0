#include "virtio/console/console_device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "virtio/buffers.h"
#include "virtio/console/control.h"
#include "virtio/queue_server.h"
#include "virtio/virtio_spec.h"

namespace vmm::virtio::console {

namespace {
// A control message from the driver is 8 bytes; anything longer is not read past this.
constexpr uint32_t kControlCap = 4096;
// Device-to-driver control messages waiting for receive buffers: a driver that posts none must
// not make a resizing terminal grow the queue without bound.
constexpr size_t kMaxControlBacklog = 256;

struct Pending {
  uint16_t head;
  Buffers bufs;
};

// One port's I/O: transmit FIFO (output keeps the guest's order) and parked receive chains.
struct PortIo {
  PortIo(img::IoLoop& loop, uint32_t id, ConsoleHost* host, bool named)
      : id(id), host(host), named(named), tx_ready(loop), rx_ready(loop) {}
  const uint32_t id;
  ConsoleHost* const host;  // null: port 0 without a console (output dropped, no input)
  const bool named;
  std::deque<Pending> tx, rx;
  LoopEvent tx_ready, rx_ready;
  bool input_ended = false;
  bool output_lost = false;
};

}  // namespace

// The handler on the QueueServer: per port, one writer coroutine and one reader coroutine; with
// MULTIPORT also the control queues (PortControl), and a coroutine that turns resize() into a
// RESIZE message or a config-change interrupt.
class ConsoleWorker final : public ChainHandler {
 public:
  ConsoleWorker(img::IoLoop& loop, ConsoleDevice& dev,
                const std::vector<std::unique_ptr<ConsoleHost>>& hosts,
                const ConsoleOptions& opts, int resize_fd, ActivateArgs args)
      : dev_(dev),
        max_request_(opts.max_request),
        features_(args.features),
        multiport_(args.features & feature(kFMultiport)),
        resize_fd_(resize_fd),
        irq_(*args.irq),
        control_(port_descs(hosts, opts), dev.size().first, dev.size().second),
        server_("virtio-console", loop, std::move(args.queues), *args.irq, *this) {
    for (uint32_t id = 0; id < hosts.size(); ++id) {
      if (id > 0 && !multiport_) break;  // the driver sees port 0 alone
      ports_.push_back(std::make_unique<PortIo>(loop, id, hosts[id].get(), id > 0));
    }
  }
  ~ConsoleWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }

  void started(QueueServer& s) override {
    for (auto& p : ports_) {
      if (!p->host) continue;
      s.loop().spawn(writer(*p));
      if (p->host->in_fd() >= 0) s.loop().spawn(reader(*p));
    }
    s.loop().spawn(watch_resize());
  }

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    if (multiport_ && queue == kControlReceiveQueue) {
      auto bufs = collect_buffers(chain, BufferDirection::kDeviceWrites, kControlCap);
      if (!bufs) return img::invalid_argument(bufs.error());
      control_rx_.push_back({chain.head, std::move(*bufs)});
      pump_control();
      return {};
    }
    if (multiport_ && queue == kControlTransmitQueue) return control_message(chain);
    PortIo* p = port_of(queue);
    if (!p) return img::invalid_argument(img::strfmt("queue %u belongs to no port", queue));
    bool receive = queue == port_receive_queue(p->id);
    auto bufs = collect_buffers(
        chain, receive ? BufferDirection::kDeviceWrites : BufferDirection::kDeviceReads,
        max_request_);
    if (!bufs) return img::invalid_argument(bufs.error());
    if (!p->host) {
      // No console behind port 0: output goes nowhere, input never comes.
      if (!receive) server_.complete(queue, chain.head, 0);
      return {};
    }
    auto& fifo = receive ? p->rx : p->tx;
    fifo.push_back({chain.head, std::move(*bufs)});
    (receive ? p->rx_ready : p->tx_ready).notify();
    return {};
  }

  void stopping() override {
    for (auto& p : ports_) {
      p->tx.clear();  // dropped: after a reset the driver forgets them
      p->rx.clear();
      p->tx_ready.notify();
      p->rx_ready.notify();
    }
    control_rx_.clear();
  }

 private:
  static std::vector<PortDesc> port_descs(const std::vector<std::unique_ptr<ConsoleHost>>& hosts,
                                          const ConsoleOptions& opts) {
    std::vector<PortDesc> d;
    if (hosts[0]) d.push_back({0, "", true});
    for (size_t i = 0; i < opts.ports.size(); ++i)
      d.push_back({static_cast<uint32_t>(i + 1), opts.ports[i].name, false});
    return d;
  }

  PortIo* port_of(uint16_t queue) {
    if (queue == kControlReceiveQueue || queue == kControlTransmitQueue) return nullptr;
    uint32_t id = queue < 2 ? 0 : (queue - 2u) / 2u;
    return id < ports_.size() ? ports_[id].get() : nullptr;
  }

  // Host input is delivered to a port the guest has open; without MULTIPORT there is only the
  // console, always open.
  bool deliverable(const PortIo& p) const { return !multiport_ || control_.guest_open(p.id); }

  img::Status control_message(const DescriptorChain& chain) {
    auto bufs = collect_buffers(chain, BufferDirection::kDeviceReads, kControlCap);
    if (!bufs) return img::invalid_argument(bufs.error());
    std::vector<uint8_t> bytes;
    for (std::span<uint8_t> s : bufs->spans) bytes.insert(bytes.end(), s.begin(), s.end());
    server_.complete(kControlTransmitQueue, chain.head, 0);
    auto m = decode_control(bytes);
    img::Status st = m ? control_.on_driver(*m, out_) : img::Status(img::Unexpected(m.error()));
    if (!st) server_.log_guest_error("control: %s", st.error().to_string().c_str());
    for (auto& p : ports_) p->rx_ready.notify();  // a port may have opened
    pump_control();
    return {};
  }

  // Moves the replies PortControl produced into the driver's control receive buffers.
  void pump_control() {
    for (ControlMsg& m : out_) {
      if (backlog_.size() >= kMaxControlBacklog) {
        server_.log_guest_error("control: the driver posts no control buffers; message dropped");
        continue;
      }
      backlog_.push_back(encode_control(m));
    }
    out_.clear();
    while (!backlog_.empty() && !control_rx_.empty()) {
      Pending b = std::move(control_rx_.front());
      control_rx_.pop_front();
      server_.complete(kControlReceiveQueue, b.head, copy_into(b.bufs, backlog_.front()));
      backlog_.pop_front();
    }
  }

  // The host end of port p went away: a named port's driver hears PORT_OPEN(0).
  void host_gone(PortIo& p) {
    if (!multiport_ || !p.named) return;
    control_.set_host_connected(p.id, false, out_);
    pump_control();
  }

  img::Task<void> writer(PortIo& p) {
    while (!server_.stopping()) {
      if (p.tx.empty()) {
        co_await p.tx_ready.wait();
        continue;
      }
      Pending& pend = p.tx.front();
      bool ok = true;
      for (std::span<uint8_t> s : pend.bufs.spans) {
        size_t at = 0;
        while (ok && at < s.size()) {
          long n = p.host->write_some(s.subspan(at));
          if (n == -EAGAIN || n == -EWOULDBLOCK) {
            ok = co_await server_.wait(p.host->out_fd(), POLLOUT);
            continue;
          }
          if (n <= 0) {
            // The host side went away (EPIPE, closed file): the guest's output is lost, but the
            // guest keeps running and its buffers come back.
            if (!p.output_lost) {
              server_.log_guest_error("port %u output: %s", p.id, strerror(-static_cast<int>(n)));
              p.output_lost = true;
              host_gone(p);
            }
            break;
          }
          at += static_cast<size_t>(n);
        }
        if (!ok || p.output_lost) break;
      }
      if (!ok || p.tx.empty()) break;  // stopping: stopping() cleared the FIFO
      server_.complete(static_cast<uint16_t>(port_receive_queue(p.id) + 1), pend.head,
                       0);  // §5.3.6: the device writes nothing back
      p.tx.pop_front();
    }
  }

  img::Task<void> reader(PortIo& p) {
    while (!server_.stopping()) {
      if (p.rx.empty() || !deliverable(p)) {
        co_await p.rx_ready.wait();
        continue;
      }
      bool readable = co_await server_.wait(p.host->in_fd(), POLLIN);  // gcc 12: not in the if
      if (!readable) break;
      if (p.rx.empty() || !deliverable(p)) continue;
      Pending pend = std::move(p.rx.front());
      long n = p.host->read_some(pend.bufs.spans);
      if (n == -EAGAIN || n == -EWOULDBLOCK) {
        p.rx.front() = std::move(pend);
        continue;
      }
      if (n <= 0) {
        // End of input (or an error): the buffers stay parked (see the header) and the
        // reading stops.
        p.rx.front() = std::move(pend);
        p.input_ended = true;
        host_gone(p);
        break;
      }
      p.rx.pop_front();
      server_.complete(port_receive_queue(p.id), pend.head, static_cast<uint32_t>(n));
    }
  }

  img::Task<void> watch_resize() {
    while (!server_.stopping()) {
      bool ready = co_await server_.wait(resize_fd_, POLLIN);
      if (!ready) break;
      uint64_t n;
      if (::read(resize_fd_, &n, sizeof n) != sizeof n) continue;
      auto [cols, rows] = dev_.size();
      if (multiport_) {
        control_.resize(cols, rows, out_);
        pump_control();
      } else if (features_ & feature(kFSize)) {
        irq_.signal_config_change();
      }
    }
  }

  ConsoleDevice& dev_;
  const uint32_t max_request_;
  const uint64_t features_;
  const bool multiport_;
  const int resize_fd_;
  VirtioInterrupt& irq_;
  PortControl control_;
  std::vector<ControlMsg> out_;                  // replies not yet encoded
  std::deque<std::vector<uint8_t>> backlog_;     // encoded, waiting for a receive buffer
  std::deque<Pending> control_rx_;               // the driver's control receive buffers
  std::vector<std::unique_ptr<PortIo>> ports_;  // by port id
  QueueServer server_;  // last: stopped before the members above go
};

img::Result<std::unique_ptr<ConsoleDevice>> ConsoleDevice::create(const ConsoleOptions& opts,
                                                                  img::IoLoop::Options loop_opts) {
  if (opts.queue_size < 1 || opts.queue_size > kMaxQueueSize || opts.max_request == 0) {
    return img::invalid_argument("virtio-console: bad queue size or request cap");
  }
  if (opts.ports.size() > kMaxNamedPorts) {
    return img::invalid_argument(
        img::strfmt("at most %zu named ports, not %zu", kMaxNamedPorts, opts.ports.size()));
  }
  if (!opts.has_console && opts.ports.empty()) {
    return img::invalid_argument("virtio-console: neither a console nor a named port");
  }
  std::vector<std::unique_ptr<ConsoleHost>> hosts(1);
  if (opts.has_console) {
    ASSIGN_OR_RETURN(hosts[0], ConsoleHost::open(opts.host));
  }
  for (size_t i = 0; i < opts.ports.size(); ++i) {
    const SerialPortOptions& p = opts.ports[i];
    if (std::string why = check_port_name(p.name); !why.empty()) return img::invalid_argument(why);
    for (size_t j = 0; j < i; ++j) {
      if (opts.ports[j].name == p.name) {
        return img::invalid_argument("port name '" + p.name + "' is given twice");
      }
    }
    auto h = ConsoleHost::open(p.host);
    if (!h) return img::Unexpected(h.error().prepend("port " + p.name));
    hosts.push_back(std::move(*h));
  }
  ASSIGN_OR_RETURN(auto loop, img::IoLoop::create(loop_opts));
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return img::io_error(errno, "virtio-console: eventfd");
  return std::unique_ptr<ConsoleDevice>(
      new ConsoleDevice(std::move(loop), std::move(hosts), opts, fd));
}

ConsoleDevice::ConsoleDevice(std::unique_ptr<img::IoLoop> loop,
                             std::vector<std::unique_ptr<ConsoleHost>> hosts,
                             const ConsoleOptions& opts, int resize_fd)
    : loop_(std::move(loop)),
      hosts_(std::move(hosts)),
      opts_(opts),
      resize_fd_(resize_fd),
      config_(cfg::kSize, 0) {
  uint16_t cols = opts_.cols, rows = opts_.rows;
  if (hosts_[0]) hosts_[0]->window_size(&cols, &rows);
  std::memcpy(config_.data() + cfg::kCols, &cols, 2);  // little-endian host (virtio_spec.h)
  std::memcpy(config_.data() + cfg::kRows, &rows, 2);
  uint32_t ports = max_nr_ports();  // only meaningful with F_MULTIPORT
  std::memcpy(config_.data() + cfg::kMaxNrPorts, &ports, 4);
}

ConsoleDevice::~ConsoleDevice() {
  reset();
  ::close(resize_fd_);
}

uint16_t ConsoleDevice::device_type() const { return kDeviceIdConsole; }

uint64_t ConsoleDevice::device_features() const {
  return feature(kFSize) | feature(kFEmergWrite) | (multiport() ? feature(kFMultiport) : 0);
}

uint16_t ConsoleDevice::num_queues() const {
  // Without MULTIPORT two queues; with it a pair per port plus the control pair (§5.3.2).
  return static_cast<uint16_t>(multiport() ? 2 * (max_nr_ports() + 1) : 2);
}

void ConsoleDevice::read_config(uint32_t offset, std::span<uint8_t> data) const {
  std::lock_guard l(config_mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    // emerg_wr reads as zero; it is a write-only doorbell.
    uint64_t at = uint64_t{offset} + i;
    data[i] = at < cfg::kEmergWr ? config_[at] : 0;
  }
}

void ConsoleDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  // §5.3.4: a write to emerg_wr outputs its low byte at once on the console, even before
  // DRIVER_OK (early boot messages). The other fields are read-only.
  if (offset != cfg::kEmergWr || data.empty() || !hosts_[0]) return;
  (void)hosts_[0]->write_some(data.first(1));
}

img::Status ConsoleDevice::activate(ActivateArgs args) {
  reset();
  worker_ = std::make_unique<ConsoleWorker>(*loop_, *this, hosts_, opts_, resize_fd_,
                                            std::move(args));
  return worker_->start();
}

void ConsoleDevice::reset() { worker_.reset(); }

img::Status ConsoleDevice::pause() { return worker_ ? worker_->pause() : img::Status{}; }

void ConsoleDevice::resume() {
  if (worker_) worker_->resume();
}

std::pair<uint16_t, uint16_t> ConsoleDevice::size() const {
  std::lock_guard l(config_mu_);
  uint16_t cols, rows;
  std::memcpy(&cols, config_.data() + cfg::kCols, 2);
  std::memcpy(&rows, config_.data() + cfg::kRows, 2);
  return {cols, rows};
}

void ConsoleDevice::resize(uint16_t cols, uint16_t rows) {
  {
    std::lock_guard l(config_mu_);
    std::memcpy(config_.data() + cfg::kCols, &cols, 2);
    std::memcpy(config_.data() + cfg::kRows, &rows, 2);
  }
  uint64_t one = 1;
  (void)!::write(resize_fd_, &one, sizeof one);
}

void ConsoleDevice::host_resized() {
  uint16_t cols, rows;
  if (!hosts_[0] || !hosts_[0]->window_size(&cols, &rows)) return;
  if (std::pair(cols, rows) != size()) resize(cols, rows);
}

}  // namespace vmm::virtio::console
