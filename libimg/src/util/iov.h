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
  // Copies the next n bytes from src and advances past them.
  void copy_from(const uint8_t* src, uint64_t n) {
    while (n > 0 && i_ < iov_.size()) {
      uint64_t avail = iov_[i_].iov_len - off_;
      uint64_t k = std::min(avail, n);
      if (k > 0) std::memcpy(static_cast<char*>(iov_[i_].iov_base) + off_, src, k);
      advance_in(k, avail);
      src += k;
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
