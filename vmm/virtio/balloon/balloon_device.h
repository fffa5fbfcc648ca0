// BalloonDevice: virtio-balloon (virtio 1.2 §5.5), the host asking the guest for memory back.
// Queues: 0 inflateq, 1 deflateq, 2 statsq (VIRTIO_BALLOON_F_STATS_VQ). Configuration:
// num_pages (the balloon size the host wants, in 4 KiB pages; set from the target) and actual
// (what the driver says it holds). Features offered: STATS_VQ, DEFLATE_ON_OOM.
//
// Inflate: each chain is an array of le32 page frame numbers (4 KiB units, §5.5.6); every PFN that
// names a page of guest RAM is given back to the host (GuestMemory::discard, MADV_DONTNEED), so
// the VMM's RSS drops. On --hugepages memory (MADV_REMOVE) a 2 MiB page goes back only once the
// guest has ballooned all 512 of its 4 KiB pages (HostPages). Parse, then act: a chain with a
// device-writable descriptor, a length that is not a multiple of 4, or more PFNs than
// kMaxPfnsPerChain is refused (used length 0, logged) and nothing is discarded; a PFN outside
// guest RAM is skipped and counted. Deflate needs nothing from the host (a page given back
// refaults as zeros when the guest touches it) beyond making a huge page partial again; its
// chains are checked the same way and completed. Stats (§5.5.6.3): the driver's buffer of (le16
// tag, le64 value) entries is recorded and kept; every stats interval the device returns it to ask for
// fresh ones.
//
// Thread-safety: the transport calls the VirtioDevice methods one at a time under its lock; the
// worker runs on its QueueServer thread; stats() and discarded_pages() are safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "img/io_loop.h"
#include "virtio/virtio_device.h"

namespace vmm::virtio::balloon {

inline constexpr unsigned kFMustTellHost = 0;
inline constexpr unsigned kFStatsVq = 1;
inline constexpr unsigned kFDeflateOnOom = 2;
namespace cfg {
inline constexpr uint32_t kNumPages = 0;
inline constexpr uint32_t kActual = 4;
inline constexpr uint32_t kSize = 8;
}  // namespace cfg
inline constexpr uint16_t kInflateQueue = 0;
inline constexpr uint16_t kDeflateQueue = 1;
inline constexpr uint16_t kStatsQueue = 2;
inline constexpr uint64_t kPageSize = 4096;  // §5.5.6: PFNs are in 4096-byte units
// Linux sends at most 256 PFNs a chain (VIRTIO_BALLOON_ARRAY_PFNS_MAX); this leaves room and still
// bounds one chain's work.
inline constexpr uint32_t kMaxPfnsPerChain = 4096;
inline constexpr uint32_t kStatEntrySize =
    10;  // struct virtio_balloon_stat { le16 tag; le64 val; }

// The PFNs of an inflate/deflate chain, copied out of guest memory (the guest may rewrite them),
// or why the chain is refused. Pure function.
std::expected<std::vector<uint32_t>, std::string> parse_pfns(const DescriptorChain& chain);

struct BalloonOptions {
  uint64_t num_pages = 0;                       // initial balloon size requested, 4 KiB pages
  std::chrono::milliseconds stats_interval{0};  // 0: never ask for fresh stats
  uint16_t queue_size = 128;
};

class BalloonWorker;

class BalloonDevice final : public VirtioDevice {
 public:
  static img::Result<std::unique_ptr<BalloonDevice>> create(const BalloonOptions& opts,
                                                            img::IoLoop::Options loop_opts = {});
  ~BalloonDevice() override;

  // The host changes its request (raises the configuration interrupt once the guest runs).
  // Safe from any thread.
  void set_num_pages(uint32_t pages);
  uint32_t num_pages() const { return num_pages_.load(); }
  uint32_t actual_pages() const { return actual_.load(); }  // what the driver last reported
  std::map<uint16_t, uint64_t> stats() const;  // latest stats by tag
  uint64_t discarded_pages() const { return discarded_.load(); }
  uint64_t bad_pfns() const { return bad_pfns_.load(); }
  // Huge pages (--hugepages) of which the guest has ballooned some 4 KiB pages but not all: the
  // host gets a huge page back only whole.
  uint64_t partial_host_pages() const { return partial_host_pages_.load(); }

  uint16_t device_type() const override;
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 3; }
  uint16_t queue_max_size() const override { return opts_.queue_size; }
  uint32_t config_size() const override { return cfg::kSize; }
  void read_config(uint32_t offset, std::span<uint8_t> data) const override;
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  img::Status activate(ActivateArgs args) override;
  void reset() override;
  img::Status pause() override;
  void resume() override;

 private:
  friend class BalloonWorker;
  BalloonDevice(std::unique_ptr<img::IoLoop> loop, const BalloonOptions& opts);

  std::unique_ptr<img::IoLoop> loop_;
  BalloonOptions opts_;
  std::atomic<uint32_t> num_pages_{0};  // set_num_pages may come from any thread
  std::atomic<uint32_t> actual_{0};  // written by the driver, read by the control socket
  std::mutex irq_mu_;                // irq_: set by activate/reset, used by set_num_pages
  VirtioInterrupt* irq_ = nullptr;
  std::atomic<uint64_t> discarded_{0}, bad_pfns_{0}, partial_host_pages_{0};
  mutable std::mutex stats_mu_;
  std::map<uint16_t, uint64_t> stats_;
  std::unique_ptr<BalloonWorker> worker_;
};

}  // namespace vmm::virtio::balloon
