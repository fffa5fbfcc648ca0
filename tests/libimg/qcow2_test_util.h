// A qcow2 image in memory for driver tests: create, open, reopen, check.
#pragma once

#include <gtest/gtest.h>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "test_util.h"

namespace img::test {

inline uint64_t qcow2_l1_offset_mask() { return 0x00fffffffffffe00ull; }
inline uint64_t qcow2_copied_flag() { return 1ull << 63; }

// Owns the bytes of a qcow2 image (a FaultFile, so crash tests can use it too) and a driver open
// on them. The driver's File is a thin view that forwards to the shared FaultFile.
class MemImage {
 public:
  MemImage(IoLoop& loop, Qcow2CreateOptions opts, bool async_file = false)
      : loop_(loop), file_(std::make_shared<FaultFile>(async_file ? &loop : nullptr)) {
    auto s = loop.run(create_qcow2(*file_, opts));
    EXPECT_TRUE(s.has_value()) << s.error().to_string();
    auto d = open({});
    EXPECT_TRUE(d.has_value()) << d.error().to_string();
  }
  ~MemImage() { close(); }

  Status open(OpenOptions o) {
    drv.reset();
    o.format = "qcow2";
    auto d = loop_.run(open_image_file(loop_, std::make_unique<View>(file_), o));
    if (!d) return Unexpected(d.error());
    drv = std::move(*d);
    return {};
  }
  void close() {
    if (drv) {
      auto s = loop_.run(drv->close());
      EXPECT_TRUE(s.has_value()) << s.error().to_string();
      drv.reset();
    }
  }
  void reopen() {
    close();
    auto s = open({});
    ASSERT_TRUE(s.has_value()) << s.error().to_string();
  }
  // Drops the driver without closing it (as a crash would).
  void abandon() { drv.reset(); }
  std::vector<uint8_t>& file_bytes() { return file_->bytes(); }
  FaultFile& fault_file() { return *file_; }

  std::unique_ptr<BlockDriver> drv;

 private:
  // Forwards to the shared FaultFile, so the image outlives any one driver.
  class View : public File {
   public:
    explicit View(std::shared_ptr<FaultFile> f) : f_(std::move(f)) {}
    Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
      return f_->readv(off, iov);
    }
    Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
      return f_->writev(off, iov);
    }
    Task<Status> flush() override { return f_->flush(); }
    Task<Status> discard(uint64_t off, uint64_t len) override { return f_->discard(off, len); }
    Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
      return f_->write_zeroes(off, len);
    }
    Task<Status> allocate(uint64_t off, uint64_t len) override { return f_->allocate(off, len); }
    Task<Status> truncate(uint64_t size) override { return f_->truncate(size); }
    Result<uint64_t> size() override { return f_->size(); }
    bool read_only() const override { return f_->read_only(); }
    const std::string& name() const override { return f_->name(); }

   private:
    std::shared_ptr<FaultFile> f_;
  };

  IoLoop& loop_;
  std::shared_ptr<FaultFile> file_;
};

// The image's own consistency check finds no corruption and no leaks (driver must be closed or
// flushed).
inline void expect_clean(IoLoop& loop, MemImage& m, bool allow_leaks = false) {
  auto r = loop.run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  std::string msgs;
  for (auto& s : r->messages) msgs += s + "\n";
  EXPECT_EQ(r->corruptions, 0u) << msgs;
  EXPECT_EQ(r->check_errors, 0u) << msgs;
  if (!allow_leaks) {
    EXPECT_EQ(r->leaks, 0u) << msgs;
  }
}

}  // namespace img::test
