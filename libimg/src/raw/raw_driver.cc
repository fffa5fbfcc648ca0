// raw: the image is the file, byte for byte. Holes of the host file read as zeros and report as
// kZero.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "img/image.h"

namespace img {
namespace {

class RawDriver final : public BlockDriver {
 public:
  explicit RawDriver(std::unique_ptr<File> f) : file_(std::move(f)) {
    auto s = file_->size();
    size_ = s ? *s : 0;
  }

  uint64_t size() const override { return size_; }
  bool read_only() const override { return file_->read_only(); }
  const char* format_name() const override { return "raw"; }

  Task<Status> readv(uint64_t off, std::span<const iovec> iov) override {
    CO_RETURN_IF_ERROR(check_range("read", off, iov_length(iov)));
    CO_ASSIGN_OR_RETURN(uint64_t got, co_await file_->readv(off, iov));
    (void)got;  // a file that shrank under us reads as zeros past its end
    co_return Status{};
  }
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
    CO_RETURN_IF_ERROR(check_range("write", off, iov_length(iov)));
    co_return co_await file_->writev(off, iov);
  }
  Task<Status> flush() override { co_return co_await file_->flush(); }
  Task<Status> discard(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(check_range("discard", off, len));
    co_return co_await file_->trim(off, len);  // a hint: the data need not turn into zeros
  }
  Task<Status> write_zeroes(uint64_t off, uint64_t len, WriteZeroesFlags flags) override {
    CO_RETURN_IF_ERROR(check_range("write-zeroes", off, len));
    if (flags.may_unmap) co_return co_await file_->discard(off, len);
    co_return co_await file_->write_zeroes(off, len);
  }
  // fallocate (punch hole or zero range): the file system zeroes without data being written.
  bool zeroes_without_writing(uint64_t, uint64_t) const override { return true; }
  Task<Result<BlockStatus>> block_status(uint64_t off, uint64_t len) override {
    CO_RETURN_IF_ERROR(check_range("block-status", off, len));
    // The host file system's holes read as zeros (SEEK_DATA / SEEK_HOLE), as QEMU's file-posix
    // reports them: a sparse raw image converts at the cost of its data.
    CO_ASSIGN_OR_RETURN(File::Extent ext, co_await file_->extent(off, len));
    BlockStatus st;
    st.kind = ext.data ? BlockStatus::Kind::kData : BlockStatus::Kind::kZero;
    st.length = ext.length == 0 ? len : ext.length;
    st.known_zero = ext.data && ext.zero;
    if (ext.data) st.host_offset = off;
    co_return st;
  }
  Task<Status> copy_range_to(uint64_t off, BlockDriver& dst, uint64_t dst_off,
                             uint64_t len) override {
    CO_RETURN_IF_ERROR(check_range("copy-range", off, len));
    auto* raw = dynamic_cast<RawDriver*>(&dst);
    if (!raw) co_return not_supported("copy offloading needs a raw destination");
    CO_RETURN_IF_ERROR(raw->check_range("copy-range", dst_off, len));
    co_return co_await file_->copy_range(off, *raw->file_, dst_off, len);
  }
  Task<Status> close() override { co_return co_await file_->flush(); }
  Task<Status> resize(uint64_t new_size, const ResizeOptions& opts) override;

 private:
  std::unique_ptr<File> file_;
  uint64_t size_;
};

// As QEMU's file-posix raw_co_truncate: a grow extends the file (ftruncate, fallocate of the new
// range, or zeros written over it); a shrink truncates. raw cannot tell data from holes here, so
// a shrink without allow_shrink is refused whatever the tail holds.
Task<Status> RawDriver::resize(uint64_t new_size, const ResizeOptions& opts) {
  if (read_only()) co_return read_only_error(file_->name() + ": resize: image is open read-only");
  if (opts.preallocation == Preallocation::kMetadata) {
    co_return not_supported("Unsupported preallocation mode: metadata");
  }
  uint64_t old = size_;
  if (new_size < old) {
    if (opts.preallocation != Preallocation::kOff) {
      co_return invalid_argument("Preallocation can't be used for shrinking an image");
    }
    if (!opts.allow_shrink) {
      co_return invalid_argument(
          strfmt("%s: shrinking from %llu to %llu bytes would drop the "
                 "data past the new end",
                 file_->name().c_str(), (unsigned long long)old, (unsigned long long)new_size));
    }
  }
  if (new_size > old && opts.preallocation == Preallocation::kFalloc) {
    CO_RETURN_IF_ERROR(co_await file_->allocate(old, new_size - old));
  } else if (new_size > old && opts.preallocation == Preallocation::kFull) {
    // Real zeros, so every block is allocated (write_zeroes may leave holes).
    constexpr uint64_t kChunk = 1 << 20;
    std::vector<uint8_t> zeros(std::min(kChunk, new_size - old), 0);
    for (uint64_t off = old; off < new_size; off += kChunk) {
      CO_RETURN_IF_ERROR(
          co_await file_->write(off, zeros.data(), std::min(kChunk, new_size - off)));
    }
  }
  CO_RETURN_IF_ERROR(co_await file_->truncate(new_size));
  size_ = new_size;
  co_return co_await file_->flush();
}

}  // namespace

std::unique_ptr<BlockDriver> make_raw_driver(std::unique_ptr<File> file) {
  return std::make_unique<RawDriver>(std::move(file));
}

}  // namespace img
