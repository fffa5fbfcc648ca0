// MemFs: an in-memory file system for backing-chain tests. Files are shared MemFiles; each open
// hands out a view that honours read-only opens, so a test can see that backing files are never
// written.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "img/image.h"
#include "img/mem_file.h"

namespace img::test {

class MemFs final : public FileOpener {
 public:
  explicit MemFs(IoLoop* loop = nullptr) : loop_(loop) {}

  MemFile& create(const std::string& path) {
    auto f = std::make_shared<MemFile>(loop_, path);
    files_[normal(path)] = f;
    return *f;
  }
  MemFile* find(const std::string& path) {
    auto it = files_.find(normal(path));
    return it == files_.end() ? nullptr : it->second.get();
  }
  int opens_for_write() const { return rw_opens_; }

  Result<std::unique_ptr<File>> open(IoLoop&, const std::string& path,
                                     FileOpenOptions opts) const override {
    auto it = files_.find(normal(path));
    if (it == files_.end()) {
      return make_error(ErrorCode::kNotFound, path + ": No such file or directory", ENOENT);
    }
    if (!opts.read_only) ++rw_opens_;
    return std::unique_ptr<File>(new View(it->second, path, opts.read_only));
  }
  std::string identity(const std::string& path) const override { return normal(path); }

 private:
  static std::string normal(const std::string& p) {
    return std::filesystem::path(p).lexically_normal().string();
  }
  class View final : public File {
   public:
    View(std::shared_ptr<MemFile> f, std::string name, bool ro)
        : f_(std::move(f)), name_(std::move(name)), ro_(ro) {}
    Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
      return f_->readv(off, iov);
    }
    Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
      if (ro_) return refuse();
      return f_->writev(off, iov);
    }
    Task<Status> flush() override { return f_->flush(); }
    Task<Status> discard(uint64_t off, uint64_t len) override {
      if (ro_) return refuse();
      return f_->discard(off, len);
    }
    Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
      if (ro_) return refuse();
      return f_->write_zeroes(off, len);
    }
    Task<Status> allocate(uint64_t off, uint64_t len) override {
      if (ro_) return refuse();
      return f_->allocate(off, len);
    }
    Task<Status> truncate(uint64_t size) override {
      if (ro_) return refuse();
      return f_->truncate(size);
    }
    Result<uint64_t> size() override { return f_->size(); }
    bool read_only() const override { return ro_ || f_->read_only(); }
    const std::string& name() const override { return name_; }

   private:
    Task<Status> refuse() { co_return read_only_error(name_ + " is open read-only"); }
    std::shared_ptr<MemFile> f_;
    std::string name_;
    bool ro_;
  };

  IoLoop* loop_;
  std::map<std::string, std::shared_ptr<MemFile>> files_;
  mutable int rw_opens_ = 0;
};

}  // namespace img::test
