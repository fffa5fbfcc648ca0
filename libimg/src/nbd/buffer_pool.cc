// BufferPool: see buffer_pool.h.
#include "nbd/buffer_pool.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace img::nbd {

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)),
      p_(std::exchange(o.p_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      cap_(std::exchange(o.cap_, 0)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = std::exchange(o.pool_, nullptr);
    p_ = std::exchange(o.p_, nullptr);
    size_ = std::exchange(o.size_, 0);
    cap_ = std::exchange(o.cap_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (p_) pool_->put(p_, cap_);
  pool_ = nullptr;
  p_ = nullptr;
  size_ = cap_ = 0;
}

BufferPool::~BufferPool() {
  for (const Free& f : free_) std::free(f.p);
}

Buffer BufferPool::get(size_t n) {
  if (n == 0) return {};
  size_t best = free_.size();
  for (size_t i = 0; i < free_.size(); ++i) {
    if (free_[i].cap >= n && (best == free_.size() || free_[i].cap < free_[best].cap)) best = i;
  }
  if (best < free_.size()) {
    Free f = free_[best];
    free_[best] = free_.back();
    free_.pop_back();
    kept_bytes_ -= f.cap;
    return Buffer(this, f.p, n, f.cap);
  }
  size_t cap = (n + kAlign - 1) / kAlign * kAlign;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kAlign, cap));
  if (!p) throw std::bad_alloc();
  ++allocations_;
  return Buffer(this, p, n, cap);
}

void BufferPool::put(uint8_t* p, size_t cap) {
  if (free_.size() < max_kept_ && kept_bytes_ + cap <= max_kept_bytes_) {
    free_.push_back({p, cap});
    kept_bytes_ += cap;
    return;
  }
  std::free(p);
}

}  // namespace img::nbd
