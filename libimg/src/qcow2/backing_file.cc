// Changing the backing file an image's header names (qemu's bdrv_change_backing_file, which
// qcow2 implements as qcow2_update_header): the whole first cluster is rewritten with the
// header, the extensions (those libimg does not interpret kept verbatim) and the new name.
#include "img/qcow2.h"
#include "qcow2/driver.h"

namespace img {
namespace qcow2 {

Task<Status> Qcow2Image::set_backing_file(const std::string& name, const std::string& format) {
  CO_RETURN_IF_ERROR(check_writable("change backing file"));
  // What was written for the old chain is durable before the header names another one (QEMU's
  // rebase flushes the image before bdrv_change_backing_file too).
  CO_RETURN_IF_ERROR(co_await flush());
  auto guard = co_await header_mu_.lock();
  Header h = h_;
  h.backing_file = name;
  h.backing_format = name.empty() ? "" : format;
  CO_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, encode_header(h));
  CO_RETURN_IF_ERROR(co_await file_->write(0, bytes.data(), bytes.size()));
  CO_RETURN_IF_ERROR(co_await file_->flush());
  h_ = std::move(h);
  co_return Status{};
}

}  // namespace qcow2

Task<Status> write_qcow2_backing_file(File& f, const std::string& name, const std::string& format) {
  if (f.read_only()) co_return read_only_error(f.name() + ": opened read-only");
  CO_ASSIGN_OR_RETURN(qcow2::Header h, co_await qcow2::read_header(f));
  if (h.has(qcow2::kIncompatCorrupt)) {
    co_return read_only_error(f.name() + ": image is corrupt; its header is not rewritten");
  }
  h.backing_file = name;
  h.backing_format = name.empty() ? "" : format;
  CO_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, qcow2::encode_header(h));
  CO_RETURN_IF_ERROR(co_await f.write(0, bytes.data(), bytes.size()));
  co_return co_await f.flush();
}

}  // namespace img
