// BufferPool: the page-aligned buffers a connection reads into and writes from (a READ's data, a
// WRITE's payload), kept for reuse. Page alignment lets an O_DIRECT image (--cache=none) take
// the buffer as it is instead of bouncing it through a copy, and reuse spares each request a
// fresh allocation that the kernel would fault in and the C++ library would zero.
//
// The pool keeps at most max_kept free buffers and max_kept_bytes of them; a buffer returned
// past either bound is freed. A buffer is never zeroed: callers fill what they send.
//
// Thread-safety: one thread (the connection's IoLoop); a Buffer must go back on that thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace img::nbd {

class BufferPool;

// A buffer of size() bytes (capacity() at least that, a multiple of the page), returned to its
// pool on destruction. Moves, does not copy. A default or zero-size Buffer holds nothing.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() const { return p_; }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }

 private:
  friend class BufferPool;
  Buffer(BufferPool* pool, uint8_t* p, size_t size, size_t cap)
      : pool_(pool), p_(p), size_(size), cap_(cap) {}
  void release();

  BufferPool* pool_ = nullptr;
  uint8_t* p_ = nullptr;
  size_t size_ = 0, cap_ = 0;
};

class BufferPool {
 public:
  static constexpr size_t kAlign = 4096;

  BufferPool(size_t max_kept, size_t max_kept_bytes)
      : max_kept_(max_kept), max_kept_bytes_(max_kept_bytes) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of n bytes: a kept one whose capacity fits (the smallest such), or a new one.
  // Throws std::bad_alloc when memory is exhausted, as a vector would.
  Buffer get(size_t n);

  // For tests: what the pool holds now, and how many buffers it has ever allocated.
  size_t kept() const { return free_.size(); }
  size_t kept_bytes() const { return kept_bytes_; }
  uint64_t allocations() const { return allocations_; }

 private:
  friend class Buffer;
  struct Free {
    uint8_t* p;
    size_t cap;
  };
  void put(uint8_t* p, size_t cap);

  size_t max_kept_, max_kept_bytes_;
  std::vector<Free> free_;
  size_t kept_bytes_ = 0;
  uint64_t allocations_ = 0;
};

}  // namespace img::nbd
