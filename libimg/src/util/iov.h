// IovCursor: walks an iovec array front to back, handing out sub-ranges as new iovecs, so a
// request's buffers are split across clusters without copying.
//
// Thread-safety: a plain value.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace img {

class IovCursor {
 public:
  explicit IovCursor(std::span<const iovec> iov) : iov_(iov) {}

  // Appends iovecs for the next n bytes to out and advances past them.
  void take(uint64_t n, std::vector<iovec>& out) {
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      if (k > 0) out.push_back({static_cast<char*>(iov_[i_].iov_base) + off_, k});
      advance_in(k, avail);
      n -= k;
    }
  }
  // Zeroes the next n bytes and advances past them.
  void zero(uint64_t n) {
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      if (k > 0) std::memset(static_cast<char*>(iov_[i_].iov_base) + off_, 0, k);
      advance_in(k, avail);
      n -= k;
    }
  }
  // Copies the next n bytes out of the iovecs into dst and advances past them.
  void gather(void* dst, uint64_t n) {
    auto* d = static_cast<char*>(dst);
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      if (k > 0) std::memcpy(d, static_cast<const char*>(iov_[i_].iov_base) + off_, k);
      advance_in(k, avail);
      d += k;
      n -= k;
    }
  }
  // Copies n bytes from src into the next n bytes of the iovecs and advances past them.
  void scatter(const void* src, uint64_t n) {
    auto* s = static_cast<const char*>(src);
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      if (k > 0) std::memcpy(static_cast<char*>(iov_[i_].iov_base) + off_, s, k);
      advance_in(k, avail);
      s += k;
      n -= k;
    }
  }
  void skip(uint64_t n) {
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      advance_in(k, avail);
      n -= k;
    }
  }

 private:
  void advance_in(uint64_t k, uint64_t avail) {
    if (k == avail) {
      ++i_;
      off_ = 0;
    } else {
      off_ += k;
    }
  }
  std::span<const iovec> iov_;
  size_t i_ = 0;
  uint64_t off_ = 0;
};

}  // namespace img
