#include "writable_base.h"

namespace imgcli {
namespace {

// A File that forwards to a shared one; a read-only view refuses writes.
class FileView final : public img::File {
 public:
  FileView(std::shared_ptr<img::File> f, bool read_only) : f_(std::move(f)), ro_(read_only) {}
  img::Task<img::Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
    co_return co_await f_->readv(off, iov);
  }
  img::Task<img::Status> writev(uint64_t off, std::span<const iovec> iov) override {
    if (ro_) co_return refused();
    co_return co_await f_->writev(off, iov);
  }
  img::Task<img::Status> flush() override { co_return co_await f_->flush(); }
  img::Task<img::Status> discard(uint64_t off, uint64_t len) override {
    if (ro_) co_return refused();
    co_return co_await f_->discard(off, len);
  }
  img::Task<img::Status> write_zeroes(uint64_t off, uint64_t len) override {
    if (ro_) co_return refused();
    co_return co_await f_->write_zeroes(off, len);
  }
  img::Task<img::Status> allocate(uint64_t off, uint64_t len) override {
    if (ro_) co_return refused();
    co_return co_await f_->allocate(off, len);
  }
  img::Task<img::Status> truncate(uint64_t size) override {
    if (ro_) co_return refused();
    co_return co_await f_->truncate(size);
  }
  img::Result<uint64_t> size() override { return f_->size(); }
  img::Result<uint64_t> allocated_size() override { return f_->allocated_size(); }
  bool read_only() const override { return ro_ || f_->read_only(); }
  const std::string& name() const override { return f_->name(); }
  img::Result<Extent> extent_at(uint64_t off, uint64_t len) override {
    return f_->extent_at(off, len);
  }
  int host_fd() const override { return f_->host_fd(); }
  // Both views lock the one open file, so their locks add up as one user's (QEMU's reopen of
  // the base for commit changes the permissions of its one open file).
  img::Status lock(uint64_t perm, uint64_t shared) override { return f_->lock(perm, shared); }

 private:
  img::Status refused() const { return img::read_only_error(f_->name() + ": opened read-only"); }
  std::shared_ptr<img::File> f_;
  bool ro_;
};

// Host files, except the base, which is handed out as a read-only view of the shared file.
class BaseSharingOpener final : public img::FileOpener {
 public:
  BaseSharingOpener(std::shared_ptr<img::File> base, std::string base_id)
      : base_(std::move(base)), base_id_(std::move(base_id)) {}
  img::Result<std::unique_ptr<img::File>> open(img::IoLoop& loop, const std::string& path,
                                               img::FileOpenOptions opts) const override {
    if (identity(path) == base_id_) return std::make_unique<FileView>(base_, true);
    return img::host_file_opener().open(loop, path, opts);
  }
  std::string identity(const std::string& path) const override {
    return img::host_file_opener().identity(path);
  }

 private:
  std::shared_ptr<img::File> base_;
  std::string base_id_;
};

}  // namespace

img::Task<img::Result<ChainWithBase>> open_chain_with_writable_base(
    img::IoLoop& loop, const std::string& top_path, const img::OpenOptions& top_opts,
    const std::string& base_path, const std::string& base_fmt) {
  auto base_file = img::open_host_file(loop, base_path, {.direct = top_opts.direct});
  if (!base_file) co_return img::Unexpected(std::move(base_file).error());
  std::shared_ptr<img::File> shared(std::move(*base_file));
  img::OpenOptions bo = top_opts;
  bo.format = base_fmt;
  bo.read_only = false;
  auto base_view = img::apply_cache_mode(std::make_unique<FileView>(shared, false),
                                         top_opts.no_flush, top_opts.writethrough);
  ChainWithBase out;
  CO_ASSIGN_OR_RETURN(out.base, co_await img::open_image_file(loop, std::move(base_view), bo));
  BaseSharingOpener opener(shared, img::host_file_opener().identity(base_path));
  img::OpenOptions to = top_opts;
  to.read_only = false;
  to.opener = &opener;
  CO_ASSIGN_OR_RETURN(out.top, co_await img::open_image(loop, top_path, to));
  co_return out;
}

}  // namespace imgcli
