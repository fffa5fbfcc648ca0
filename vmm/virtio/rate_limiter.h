// RateLimiter: a token bucket in bytes (Firecracker's devices cap guest-driven work the same way).
// Tokens refill at `rate` bytes per second up to `burst`; a request for n bytes waits until n
// tokens are there, so the long-run average stays at `rate` (plus one burst at the start). A
// rate of 0 means unlimited.
//
// Thread-safety: not thread-safe; one per device, used on its server thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace vmm::virtio {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // burst is raised to at least max_request so that every request can eventually be served.
  RateLimiter(uint64_t rate, uint64_t max_request, Clock::time_point now = Clock::now())
      : rate_(rate), burst_(std::max(rate, max_request)), tokens_(burst_), last_(now) {}

  bool unlimited() const { return rate_ == 0; }
  // How long until n bytes may be taken (zero if now).
  std::chrono::nanoseconds wait_for(uint64_t n, Clock::time_point now = Clock::now()) {
    if (unlimited()) return {};
    refill(now);
    n = std::min(n, burst_);
    if (tokens_ >= n) return {};
    double secs = static_cast<double>(n - tokens_) / static_cast<double>(rate_);
    return std::chrono::nanoseconds(static_cast<int64_t>(secs * 1e9) + 1);
  }
  // REQUIRES: wait_for(n, now) was zero.
  void take(uint64_t n, Clock::time_point now = Clock::now()) {
    if (unlimited()) return;
    refill(now);
    tokens_ -= std::min(tokens_, n);
  }

 private:
  void refill(Clock::time_point now) {
    if (now <= last_) return;
    double add = std::chrono::duration<double>(now - last_).count() * static_cast<double>(rate_);
    uint64_t whole = add >= static_cast<double>(burst_) ? burst_ : static_cast<uint64_t>(add);
    if (whole == 0) return;  // keep the fraction for later instead of rounding it away
    tokens_ = std::min(burst_, tokens_ + whole);
    last_ += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(static_cast<double>(whole) / static_cast<double>(rate_)));
    if (tokens_ == burst_) last_ = now;
  }

  uint64_t rate_;
  uint64_t burst_;
  uint64_t tokens_;
  Clock::time_point last_;
};

}  // namespace vmm::virtio
