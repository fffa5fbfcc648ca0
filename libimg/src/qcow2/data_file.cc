// External data files (spec: "Header", incompatible bit 2 and autoclear bit 1; the "External
// data file name" extension). Guest data lives in a separate file at the guest offset itself, as
// QEMU maps it (do_alloc_cluster_offset: host offset == guest offset), with no refcounts; the
// qcow2 file keeps the L1/L2 tables and the refcounts of its own clusters. With data_file_raw
// the data file also reads as a plain raw image of the disk.
#include <cstring>

#include "img/image.h"
#include "qcow2/driver.h"

namespace img::qcow2 {

Task<Status> Qcow2Image::open_data_file(const OpenOptions& opts) {
  const FileOpener& opener = opts.opener ? *opts.opener : host_file_opener();
  // QEMU 7.2 opens the name as it stands (bdrv_open_child): a relative one is relative to the
  // working directory, not to the image's folder as a backing file's is (qemu-io sub/a.qcow2
  // looks for ./d.raw). Ours does the same, so a pair of files made by one works with the other.
  const std::string& path = h_.external_data_file;
  if (opener.identity(path) == opener.identity(file_->name())) {
    // Guest writes would land on the image's own metadata.
    co_return invalid_argument(strfmt("%s: the external data file '%s' is the image itself",
                                      file_->name().c_str(), path.c_str()));
  }
  auto df = opener.open(loop_, path, {.read_only = read_only_, .direct = opts.direct});
  if (!df) {
    const Error& e = df.error();
    std::string why = e.sys_errno() ? std::strerror(e.sys_errno()) : e.message();
    co_return make_error(e.code(), strfmt("Could not open '%s': %s", path.c_str(), why.c_str()));
  }
  // QEMU's data child passes the node's permissions on and shares them, as raw's file does.
  CO_RETURN_IF_ERROR(lock_image_file(**df, "raw", read_only_, opts.force_share));
  data_file_ = apply_cache_mode(std::move(*df), opts.no_flush, opts.writethrough);
  // Data must be durable before the L2 entries that map it: the L2 cache's flush covers both.
  l2_cache_->flush_also(data_file_.get());
  co_return Status{};
}

Task<Status> Qcow2Image::release_data(uint64_t host, uint64_t len) {
  if (data_file_raw()) co_return co_await data_file_->write_zeroes(host, len);
  // Discard is advisory: a data file that cannot punch keeps its bytes, unmapped.
  (void)co_await data_file_->discard(host, len);
  co_return Status{};
}

Unexpected Qcow2Image::no_data_file_support(const char* what) const {
  // With the errno, so that img's messages end as qemu-img's do ("Operation not supported").
  return make_error(
      ErrorCode::kNotSupported,
      strfmt("%s: %s is not supported with an external data file", file_->name().c_str(), what),
      ENOTSUP);
}

}  // namespace img::qcow2
