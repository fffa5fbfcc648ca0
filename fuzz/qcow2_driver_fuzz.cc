// libFuzzer target: the qcow2 BlockDriver (libimg/src/qcow2/driver.cc and the rest) on an
// in-memory image built from the input (its backing chain, if it names one, made of copies of
// the input). If the image opens, a few reads, a write, a
// write-zeroes, a discard, a flush, two persistent bitmap edits (qemu-img bitmap's operations on
// the hostile bitmap directory) and a close run on it; each may fail, none may crash, hang or
// allocate without bound. Seeds: testdata/fuzz/qcow2_driver (small images made with qemu-img).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "img/bytes.h"
#include "img/image.h"
#include "img/io_loop.h"
#include "img/mem_file.h"
#include "img/qcow2.h"

namespace {

// Inputs larger than this are not interesting (seeds are a few KiB) and only slow the fuzzer.
constexpr size_t kMaxInput = 1 << 20;
// A host file is sparse; a MemFile is not. Hostile L2 entries may point data anywhere below
// 2^56, so the file refuses to grow past this instead of allocating it.
constexpr uint64_t kMaxFileSize = 64ull << 20;

class CappedMemFile : public img::MemFile {
 public:
  img::Task<img::Status> writev(uint64_t off, std::span<const iovec> iov) override {
    if (!fits(off, img::iov_length(iov))) co_return img::io_error(ENOSPC, "capped file");
    co_return co_await MemFile::writev(off, iov);
  }
  img::Task<img::Status> write_zeroes(uint64_t off, uint64_t len) override {
    if (!fits(off, len)) co_return img::io_error(ENOSPC, "capped file");
    co_return co_await MemFile::write_zeroes(off, len);
  }
  img::Task<img::Status> allocate(uint64_t off, uint64_t len) override {
    if (!fits(off, len)) co_return img::io_error(ENOSPC, "capped file");
    co_return co_await MemFile::allocate(off, len);
  }
  img::Task<img::Status> truncate(uint64_t size) override {
    if (size > kMaxFileSize) co_return img::io_error(ENOSPC, "capped file");
    co_return co_await MemFile::truncate(size);
  }

 private:
  static bool fits(uint64_t off, uint64_t len) {
    return off <= kMaxFileSize && len <= kMaxFileSize - off;
  }
};

// Backing files never come from the host (a hostile name could be /dev/stdin or a FIFO): every
// path the chain names opens another read-only copy of the input, so backing resolution, loops
// (by name) and depth limits are exercised in memory.
class InputFs final : public img::FileOpener {
 public:
  InputFs(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  img::Result<std::unique_ptr<img::File>> open(img::IoLoop&, const std::string& path,
                                               img::FileOpenOptions) const override {
    auto f = std::make_unique<img::MemFile>(nullptr, path);
    f->bytes().assign(data_, data_ + size_);
    f->set_read_only(true);
    return std::unique_ptr<img::File>(std::move(f));
  }
  std::string identity(const std::string& path) const override { return path; }

 private:
  const uint8_t* data_;
  size_t size_;
};

// An offset inside the image from 8 bytes of the input's tail (so the fuzzer steers requests
// without disturbing the header).
uint64_t pick(const uint8_t* data, size_t size, size_t k, uint64_t image_size) {
  if (image_size == 0) return 0;
  uint64_t v = 0;
  if (size >= 8 * (k + 1)) v = img::load_be64(data + size - 8 * (k + 1));
  return v % image_size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<img::IoLoop> loop = [] {
    auto l = img::IoLoop::create();
    if (!l) std::abort();
    return std::move(*l);
  }();
  if (size > kMaxInput) return 0;
  auto f = std::make_unique<CappedMemFile>();
  f->bytes().assign(data, data + size);
  InputFs fs(data, size);
  auto d = loop->run(img::open_image_file(
      *loop, std::move(f), {.format = "qcow2", .max_chain_depth = 3, .opener = &fs}));
  if (!d) return 0;
  img::BlockDriver& drv = **d;
  const uint64_t vs = drv.size();
  std::vector<uint8_t> buf(64 << 10, 0x5a);
  auto len_at = [&](uint64_t off, uint64_t want) { return std::min<uint64_t>(want, vs - off); };

  for (size_t k = 0; k < 3; ++k) {
    uint64_t off = pick(data, size, k, vs);
    (void)loop->run(drv.read(off, buf.data(), len_at(off, k == 0 ? buf.size() : 3000)));
  }
  uint64_t off = pick(data, size, 3, vs);
  (void)loop->run(drv.write(off, buf.data(), len_at(off, 5000)));
  off = pick(data, size, 4, vs);
  (void)loop->run(drv.write_zeroes(off, len_at(off, 70000), {.may_unmap = (size & 1) != 0}));
  off = pick(data, size, 5, vs);
  (void)loop->run(drv.discard(off, len_at(off, 200000)));
  (void)loop->run(drv.flush());
  // One edit of a name seeds use ("b0") and one of a new bitmap, the operations picked by the
  // input's last byte.
  const uint8_t sel = size ? data[size - 1] : 0;
  const auto op = static_cast<img::BitmapEdit::Op>(sel % 5);
  (void)loop->run(img::edit_bitmap(drv, "b0", {.op = op}));
  (void)loop->run(img::edit_bitmap(
      drv, "fz", {.op = img::BitmapEdit::Op::kAdd, .granularity = uint64_t{512} << (sel % 24)}));
  off = pick(data, size, 6, vs);
  (void)loop->run(drv.read(off, buf.data(), len_at(off, buf.size())));
  (void)loop->run(drv.close());
  return 0;
}
