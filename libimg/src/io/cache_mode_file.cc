// The cache modes that are not an open flag (QEMU's BDRV_O_NO_FLUSH and writethrough), as a
// wrapper around any File:
//   unsafe        flush() does nothing: qemu-img convert's default for its target, which relies
//                 on the page cache and never waits for the disk;
//   writethrough  every write, write-zeroes and discard is followed by a flush, so it is durable
//                 when it completes (QEMU flushes after each request of a writethrough
//                 BlockBackend the same way).
#include <memory>

#include "img/image.h"

namespace img {
namespace {

class CacheModeFile final : public File {
 public:
  CacheModeFile(std::unique_ptr<File> f, bool no_flush, bool writethrough)
      : f_(std::move(f)), no_flush_(no_flush), writethrough_(writethrough) {}

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
    co_return co_await f_->readv(off, iov);
  }
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
    CO_RETURN_IF_ERROR(co_await f_->writev(off, iov));
    co_return co_await after_write();
  }
  Task<Status> flush() override {
    if (no_flush_) co_return Status{};
    co_return co_await f_->flush();
  }
  Task<Status> discard(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(co_await f_->discard(off, len));
    co_return co_await after_write();
  }
  Task<Status> trim(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(co_await f_->trim(off, len));
    co_return co_await after_write();
  }
  Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(co_await f_->write_zeroes(off, len));
    co_return co_await after_write();
  }
  Task<Status> allocate(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(co_await f_->allocate(off, len));
    co_return co_await after_write();
  }
  Task<Status> truncate(uint64_t size) override {
    CO_RETURN_IF_ERROR(co_await f_->truncate(size));
    co_return co_await after_write();
  }
  Result<uint64_t> size() override { return f_->size(); }
  Result<uint64_t> allocated_size() override { return f_->allocated_size(); }
  bool read_only() const override { return f_->read_only(); }
  const std::string& name() const override { return f_->name(); }
  Result<Extent> extent_at(uint64_t off, uint64_t len) override { return f_->extent_at(off, len); }
  Task<Result<Extent>> extent(uint64_t off, uint64_t len) override {
    co_return co_await f_->extent(off, len);
  }
  int host_fd() const override { return f_->host_fd(); }
  Status lock(uint64_t perm, uint64_t shared) override { return f_->lock(perm, shared); }
  Task<Status> copy_range(uint64_t off, File& dst, uint64_t dst_off, uint64_t len) override {
    co_return co_await f_->copy_range(off, dst, dst_off, len);
  }

 private:
  Task<Status> after_write() {
    if (!writethrough_) co_return Status{};
    co_return co_await f_->flush();
  }

  std::unique_ptr<File> f_;
  bool no_flush_;
  bool writethrough_;
};

}  // namespace

std::unique_ptr<File> apply_cache_mode(std::unique_ptr<File> f, bool no_flush, bool writethrough) {
  if (!no_flush && !writethrough) return f;
  return std::make_unique<CacheModeFile>(std::move(f), no_flush, writethrough);
}

Result<CacheMode> parse_cache_mode(const std::string& name) {
  CacheMode m;
  if (name == "none" || name == "off") {
    m.direct = true;
  } else if (name == "directsync") {
    m.direct = true;
    m.writethrough = true;
  } else if (name == "writeback") {
  } else if (name == "unsafe") {
    m.no_flush = true;
  } else if (name == "writethrough") {
    m.writethrough = true;
  } else {
    return invalid_argument("unknown cache mode '" + name + "'");
  }
  return m;
}

}  // namespace img
