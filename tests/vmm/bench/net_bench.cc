// net_bench: the virtio-net device model driven like a guest driver (guest RAM in an mmap'd
// buffer, rings kept full, completions taken on the MSI-X irqfds; no KVM) on a real tap, against
// a veth pair between two network namespaces as the limit for moving the same frames through the
// kernel. Run inside a namespace with the tap and one end of the veth (run-net-bench.sh sets it
// up):
//
//   net_bench --tap TAP --veth VETH0 --peer-ns /run/netns/B --peer VETH1 [--seconds S] [--size N]
//
// Rows: guest->host (device transmit: frames posted on the tx ring, counted by a packet socket on
// the tap), host->guest (a packet socket sends on the tap, the device fills rx buffers, the bench
// reposts them), and veth0 -> veth1 (packet socket to packet socket across the namespaces).
// Frames are N bytes (default 1514, Ethernet type 0x88b5); a row reports frames/s and Gbit/s of
// frame bytes delivered.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "virtio/net/net_device.h"
#include "virtio/net/net_spec.h"
#include "virtio_rig.h"

using namespace vmm;
using namespace vmm::testing;
namespace vn = vmm::virtio::net;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kType = 0x88b5;
constexpr uint16_t kQ = 256;
constexpr uint64_t kData = 0x1000000;  // slot i's buffer at kData + i * 64 KiB

int packet_socket(const std::string& ifname, int* ifindex) {
  int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kType));
  sockaddr_ll a{};
  a.sll_family = AF_PACKET;
  a.sll_protocol = htons(kType);
  a.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  *ifindex = a.sll_ifindex;
  if (s < 0 || a.sll_ifindex == 0 || bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    std::fprintf(stderr, "net_bench: packet socket on %s: %s\n", ifname.c_str(), strerror(errno));
    std::exit(1);
  }
  int big = 16 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  return s;
}

std::vector<uint8_t> make_frame(size_t n) {
  std::vector<uint8_t> f(n, 0x5a);
  std::memset(f.data(), 0xff, 6);
  std::memcpy(f.data() + 6, "\x02\x00\x00\x00\x00\x01", 6);
  f[12] = kType >> 8;
  f[13] = kType & 0xff;
  return f;
}

struct Count {
  std::atomic<uint64_t> frames{0}, bytes{0};
};

// Counts frames arriving on s until stop.
void receive_all(int s, Count& c, std::atomic<bool>& stop) {
  std::vector<uint8_t> b(70000);
  while (!stop.load()) {
    pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n;
    while ((n = recv(s, b.data(), b.size(), MSG_DONTWAIT)) > 0) {
      c.frames.fetch_add(1, std::memory_order_relaxed);
      c.bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    }
  }
}

void send_all(int s, int ifindex, const std::vector<uint8_t>& f, std::atomic<bool>& stop) {
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  while (!stop.load()) {
    if (sendto(s, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
      if (errno == ENOBUFS || errno == EAGAIN) std::this_thread::yield();
    }
  }
}

void report(const char* row, const Count& c, double secs, size_t size) {
  double fps = c.frames.load() / secs;
  std::printf("%-28s %10.0f frames/s %8.2f Gbit/s  (%zu-byte frames)\n", row, fps,
              fps * size * 8 / 1e9, size);
}

int irqfd_for(FakeIrq& irq, unsigned vector) {
  for (auto& [gsi, r] : irq.routes)
    if (r.data == VirtioGuest::kMsiData + vector) return r.fd;
  return -1;
}

void wait_irq(int fd) {
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, 20);
  uint64_t v;
  (void)!read(fd, &v, 8);
}

}  // namespace

int main(int argc, char** argv) {
  std::string tap, veth, peer_ns, peer;
  double seconds = 3;
  size_t size = 1514;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--tap")
      tap = v;
    else if (k == "--veth")
      veth = v;
    else if (k == "--peer-ns")
      peer_ns = v;
    else if (k == "--peer")
      peer = v;
    else if (k == "--seconds")
      seconds = std::stod(v);
    else if (k == "--size")
      size = std::stoul(v);
  }
  if (tap.empty() || size < 60 || size > 9000) {
    std::fprintf(stderr,
                 "usage: net_bench --tap TAP [--veth V0 --peer-ns NSPATH --peer V1] "
                 "[--seconds S] [--size 60..9000]\n");
    return 2;
  }
  auto frame = make_frame(size);
  const uint32_t hdr = vn::hdr::kSize;

  vn::NetOptions o;
  o.tap = {vn::TapSpec::Kind::kExisting, tap, -1, 0};
  o.queue_size = kQ;
  auto d = vn::NetDevice::create(o);
  if (!d) {
    std::fprintf(stderr, "net_bench: %s\n", d.error().to_string().c_str());
    return 1;
  }
  DeviceRig rig(as_device(std::move(d)), 128 << 20);
  VirtioGuest& g = rig.guest;
  // No EVENT_IDX: an interrupt per published batch; MRG_RXBUF on, as Linux negotiates it.
  if ((g.init(2, kQ, ~virtio::feature(virtio::kFRingEventIdx)) & 0xf) != 0xf) return 1;
  int rx_irq = irqfd_for(rig.irq, vn::kRxQueue), tx_irq = irqfd_for(rig.irq, vn::kTxQueue);
  int ifindex;
  int ps = packet_socket(tap, &ifindex);

  {  // guest -> host: the tx ring kept full of one-descriptor chains
    for (unsigned i = 0; i < kQ; ++i) {
      std::memset(rig.ram.at(kData + i * 65536ull), 0, hdr);
      std::memcpy(rig.ram.at(kData + i * 65536ull + hdr), frame.data(), size);
    }
    Count c;
    std::atomic<bool> stop{false};
    std::thread rx(receive_all, ps, std::ref(c), std::ref(stop));
    uint16_t used_seen = 0;
    auto post = [&](uint16_t slot) {
      g.write_desc(vn::kTxQueue, slot, kData + slot * 65536ull, hdr + size, 0, 0);
      g.make_available(vn::kTxQueue, slot);
    };
    for (uint16_t i = 0; i < kQ; ++i) post(i);
    g.notify(vn::kTxQueue);
    auto t0 = Clock::now();
    while (Clock::now() - t0 < std::chrono::duration<double>(seconds)) {
      wait_irq(tx_irq);
      uint16_t u = g.used_idx(vn::kTxQueue);
      for (; used_seen != u; ++used_seen)
        post(static_cast<uint16_t>(g.used_elem(vn::kTxQueue, used_seen).first));
      g.notify(vn::kTxQueue);
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    stop = true;
    rx.join();
    report("guest->host (device tx)", c, secs, size);
    while (g.used_idx(vn::kTxQueue) != g.avail_idx(vn::kTxQueue)) wait_irq(tx_irq);
  }
  {  // host -> guest: rx buffers of 2 KiB (Linux's mergeable buffer size is ~1.5-4 KiB)
    Count c;
    std::atomic<bool> stop{false};
    auto post = [&](uint16_t slot) {
      g.write_desc(vn::kRxQueue, slot, kData + slot * 65536ull, 2048, virtio::kDescFWrite, 0);
      g.make_available(vn::kRxQueue, slot);
    };
    for (uint16_t i = 0; i < kQ; ++i) post(i);
    g.notify(vn::kRxQueue);
    std::thread tx(send_all, ps, ifindex, std::cref(frame), std::ref(stop));
    uint16_t used_seen = 0;
    auto t0 = Clock::now();
    while (Clock::now() - t0 < std::chrono::duration<double>(seconds)) {
      wait_irq(rx_irq);
      uint16_t u = g.used_idx(vn::kRxQueue);
      for (; used_seen != u; ++used_seen) {
        auto [id, len] = g.used_elem(vn::kRxQueue, used_seen);
        c.bytes.fetch_add(len);
        post(static_cast<uint16_t>(id));
      }
      g.notify(vn::kRxQueue);
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    stop = true;
    tx.join();
    c.frames = c.bytes.load() / (hdr + size);  // a packet may span buffers (MRG_RXBUF)
    report("host->guest (device rx)", c, secs, size);
  }
  rig.reset();
  close(ps);

  if (!veth.empty() && !peer.empty() && !peer_ns.empty()) {
    Count c;
    std::atomic<bool> stop{false};
    int vi;
    int vs = packet_socket(veth, &vi);
    int peer_sock = -1;
    std::thread([&] {  // setns affects this thread only
      int nsfd = open(peer_ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "net_bench: setns %s: %s\n", peer_ns.c_str(), strerror(errno));
        std::exit(1);
      }
      int unused;
      peer_sock = packet_socket(peer, &unused);  // sockets keep their namespace
      close(nsfd);
    })
        .join();
    std::thread rx(receive_all, peer_sock, std::ref(c), std::ref(stop));
    std::thread tx(send_all, vs, vi, std::cref(frame), std::ref(stop));
    auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    stop = true;
    tx.join();
    rx.join();
    report("veth0 -> veth1 (the limit)", c, secs, size);
  }
  return 0;
}
