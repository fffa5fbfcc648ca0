#include "img/mem_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace img {

namespace {
// A memory file refuses to grow past this, so a hostile image cannot make a test allocate
// without bound.
constexpr uint64_t kMaxMemFile = 4ull << 30;
}  // namespace

std::unique_ptr<MemFile> make_mem_file(IoLoop* loop, std::string name) {
  return std::make_unique<MemFile>(loop, std::move(name));
}

Task<void> MemFile::maybe_yield() {
  if (loop_) co_await loop_->yield();
}

void MemFile::put(uint64_t off, const uint8_t* p, uint64_t n) {
  if (off + n > data_.size()) data_.resize(off + n, 0);
  std::memcpy(data_.data() + off, p, n);
}

void MemFile::zero(uint64_t off, uint64_t n) {
  if (off + n > data_.size()) data_.resize(off + n, 0);
  std::memset(data_.data() + off, 0, n);
}

Task<Result<uint64_t>> MemFile::readv(uint64_t off, std::span<const iovec> iov) {
  co_await maybe_yield();
  uint64_t got = 0;
  for (const iovec& v : iov) {
    auto* dst = static_cast<uint8_t*>(v.iov_base);
    uint64_t n = v.iov_len;
    uint64_t avail = off < data_.size() ? std::min<uint64_t>(n, data_.size() - off) : 0;
    if (avail) std::memcpy(dst, data_.data() + off, avail);
    if (avail < n) std::memset(dst + avail, 0, n - avail);
    got += avail;
    off += n;
  }
  co_return got;
}

Task<Status> MemFile::writev(uint64_t off, std::span<const iovec> iov) {
  co_await maybe_yield();
  if (read_only_) co_return read_only_error(name_ + " is read-only");
  uint64_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  if (off + total > kMaxMemFile) co_return no_space(name_ + ": memory file limit reached");
  for (const iovec& v : iov) {
    put(off, static_cast<const uint8_t*>(v.iov_base), v.iov_len);
    off += v.iov_len;
  }
  co_return Status{};
}

Task<Status> MemFile::flush() {
  co_await maybe_yield();
  co_return Status{};
}

Task<Status> MemFile::discard(uint64_t off, uint64_t len) {
  co_await maybe_yield();
  if (read_only_) co_return read_only_error(name_ + " is read-only");
  if (off < data_.size()) zero(off, std::min<uint64_t>(len, data_.size() - off));
  co_return Status{};
}

Task<Status> MemFile::write_zeroes(uint64_t off, uint64_t len) {
  co_await maybe_yield();
  if (read_only_) co_return read_only_error(name_ + " is read-only");
  if (off + len > kMaxMemFile) co_return no_space(name_ + ": memory file limit reached");
  zero(off, len);
  co_return Status{};
}

Task<Status> MemFile::allocate(uint64_t off, uint64_t len) {
  co_await maybe_yield();
  if (read_only_) co_return read_only_error(name_ + " is read-only");
  if (off + len > kMaxMemFile) co_return no_space(name_ + ": memory file limit reached");
  if (off + len > data_.size()) data_.resize(off + len, 0);
  co_return Status{};
}

Task<Status> MemFile::truncate(uint64_t size) {
  co_await maybe_yield();
  if (read_only_) co_return read_only_error(name_ + " is read-only");
  if (size > kMaxMemFile) co_return no_space(name_ + ": memory file limit reached");
  data_.resize(size, 0);
  co_return Status{};
}

// ---- FaultFile ----

bool FaultFile::should_fail() {
  uint64_t n = ops_seen_++;
  if (n >= fail_from_) failed_ = true;
  return n >= fail_from_;
}

void FaultFile::apply(std::vector<uint8_t>& d, const Op& op) {
  switch (op.kind) {
    case Op::kWrite:
      if (op.off + op.bytes.size() > d.size()) d.resize(op.off + op.bytes.size(), 0);
      std::memcpy(d.data() + op.off, op.bytes.data(), op.bytes.size());
      break;
    case Op::kZero:
      // Zeroing past the end grows the file only for write_zeroes/allocate; discard is clipped
      // when recorded.
      if (op.off + op.len > d.size()) d.resize(op.off + op.len, 0);
      std::memset(d.data() + op.off, 0, op.len);
      break;
    case Op::kTruncate: d.resize(op.off, 0); break;
  }
}

Task<void> FaultFile::gate() {
  if (!hold_) co_return;
  struct Park {
    FaultFile* f;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { f->held_.push_back(h); }
    void await_resume() const noexcept {}
  };
  co_await Park{this};
}

void FaultFile::release_held(size_t i) {
  std::coroutine_handle<> h = held_.at(i);
  held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
  loop_->post(h);
}

void FaultFile::release_all_held() {
  while (!held_.empty()) release_held(0);
}

Task<Result<uint64_t>> FaultFile::readv(uint64_t off, std::span<const iovec> iov) {
  // Numbered when issued, so "the Nth read" means the Nth one started, however they complete.
  uint64_t n = reads_seen_++;
  bool fail = n >= read_fail_from_ && n < read_fail_until_;
  co_await gate();
  if (fail) {
    co_await maybe_yield();  // completes later, as a real read does, so others can pile up on it
    co_return io_error(EIO, name_ + ": injected read failure");
  }
  co_return co_await MemFile::readv(off, iov);
}

Task<Status> FaultFile::writev(uint64_t off, std::span<const iovec> iov) {
  if (should_fail()) co_return io_error(EIO, name_ + ": injected write failure");
  Op op{Op::kWrite, off, 0, {}};
  for (const iovec& v : iov) {
    auto* p = static_cast<const uint8_t*>(v.iov_base);
    op.bytes.insert(op.bytes.end(), p, p + v.iov_len);
  }
  if (on_write) on_write(off, op.bytes.size());
  ++writes_in_flight_;
  co_await gate();
  Status s = co_await MemFile::writev(off, iov);
  --writes_in_flight_;
  CO_RETURN_IF_ERROR(std::move(s));
  pending_.push_back(std::move(op));
  co_return Status{};
}

Task<Status> FaultFile::discard(uint64_t off, uint64_t len) {
  if (should_fail()) co_return io_error(EIO, name_ + ": injected discard failure");
  CO_RETURN_IF_ERROR(co_await MemFile::discard(off, len));
  uint64_t size = data_.size();
  if (off < size) pending_.push_back(Op{Op::kZero, off, std::min<uint64_t>(len, size - off), {}});
  co_return Status{};
}

Task<Status> FaultFile::write_zeroes(uint64_t off, uint64_t len) {
  if (should_fail()) co_return io_error(EIO, name_ + ": injected write-zeroes failure");
  CO_RETURN_IF_ERROR(co_await MemFile::write_zeroes(off, len));
  pending_.push_back(Op{Op::kZero, off, len, {}});
  co_return Status{};
}

Task<Status> FaultFile::allocate(uint64_t off, uint64_t len) {
  if (should_fail()) co_return io_error(EIO, name_ + ": injected fallocate failure");
  uint64_t old = data_.size();
  CO_RETURN_IF_ERROR(co_await MemFile::allocate(off, len));
  if (data_.size() > old) pending_.push_back(Op{Op::kTruncate, data_.size(), 0, {}});
  co_return Status{};
}

Task<Status> FaultFile::truncate(uint64_t size) {
  if (should_fail()) co_return io_error(EIO, name_ + ": injected truncate failure");
  CO_RETURN_IF_ERROR(co_await MemFile::truncate(size));
  pending_.push_back(Op{Op::kTruncate, size, 0, {}});
  co_return Status{};
}

Task<Status> FaultFile::flush() {
  uint64_t n = flushes_seen_++;
  bool fail = n >= flush_fail_from_ && n < flush_fail_until_;
  co_await gate();
  co_await maybe_yield();
  if (failed_) co_return io_error(EIO, name_ + ": flush after an injected failure");
  if (fail) co_return io_error(EIO, name_ + ": injected flush failure");
  durable_ = data_;
  pending_.clear();
  ++flushes_done_;
  co_return Status{};
}

void FaultFile::crash_drop_unflushed() {
  data_ = durable_;
  pending_.clear();
  failed_ = false;
  fail_from_ = UINT64_MAX;
}

void FaultFile::crash_keep_random_subset(std::mt19937_64& rng) {
  std::vector<uint8_t> d = durable_;
  for (const Op& op : pending_) {
    if (rng() & 1) apply(d, op);
  }
  data_ = d;
  durable_ = d;
  pending_.clear();
  failed_ = false;
  fail_from_ = UINT64_MAX;
}

}  // namespace img
