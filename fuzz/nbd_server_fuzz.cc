// libFuzzer target: a hostile NBD client. The input's first byte picks the export's settings
// (read-only, allocation depth, discard, detect-zeroes); the rest is everything the client
// sends, from its flags through option haggling to transmission requests, served by a real
// session (libimg/src/nbd) over a 256 KiB raw image in memory. Nothing may crash, hang, grow
// the image or allocate more than the session's bounds; what the server sends is counted and
// dropped.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "img/image.h"
#include "img/mem_file.h"
#include "nbd/session.h"

namespace {

constexpr uint64_t kImage = 256 * 1024;

class BytesConn : public img::nbd::Conn {
 public:
  BytesConn(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  img::Task<img::Status> read_exact(void* buf, size_t len) override {
    if (closed_ || len > n_ - pos_) {
      pos_ = n_;
      co_return img::make_error(img::ErrorCode::kIo, "end of input");
    }
    std::memcpy(buf, p_ + pos_, len);
    pos_ += len;
    co_return img::Status{};
  }
  img::Task<img::Status> write_all(std::span<const iovec> iov) override {
    if (closed_) co_return img::make_error(img::ErrorCode::kIo, "closed");
    for (const auto& v : iov) sent_ += v.iov_len;
    co_return img::Status{};
  }
  void close() override { closed_ = true; }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  uint64_t sent_ = 0;
  bool closed_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto loop = img::IoLoop::create({.entries = 64, .force_sync_fallback = true});
  if (!loop) return 0;
  auto f = std::make_unique<img::MemFile>(loop->get());
  f->bytes().resize(kImage, 0x11);
  img::MemFile* file = f.get();
  auto drv = img::make_raw_driver(std::move(f));
  img::nbd::ExportConfig exp;
  exp.driver = drv.get();
  exp.status = img::nbd::driver_status_fn(*drv);
  exp.read_only = data[0] & 1;
  exp.allocation_depth = data[0] & 2;
  exp.discard_unmap = data[0] & 4;
  exp.detect_zeroes = static_cast<img::nbd::DetectZeroes>((data[0] >> 3) % 3);
  exp.multi_conn = data[0] & 32;
  BytesConn conn(data + 1, size - 1);
  (void)(*loop)->run(img::nbd::serve_client(**loop, conn, exp));
  (*loop)->drain();
  if (file->bytes().size() != kImage) __builtin_trap();  // requests stay inside the export
  return 0;
}
