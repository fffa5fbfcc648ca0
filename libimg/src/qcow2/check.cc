// check_qcow2: `qemu-img check` for qcow2 (docs/qcow2-format.md, "Check and repair").
// One pass counts references (check_walk.cc) and compares them with the refcounts, checking
// OFLAG_COPIED (check_refcount.cc). With a repair mode the pass also fixes; then, as qemu-img
// does, a second read-only pass reports what is left. An image left without corruptions by a
// repair loses its dirty and corrupt bits (as QEMU's qcow2_mark_clean/mark_consistent).

#include "qcow2/check.h"

#include <cerrno>

#include "img/qcow2.h"
#include "qcow2/format.h"
#include "qcow2/layout.h"

namespace img {
namespace {

using qcow2::Checker;
using qcow2::Header;

Task<Result<CheckResult>> one_pass(File& f, RepairMode mode) {
  CO_ASSIGN_OR_RETURN(Header h, co_await qcow2::read_header(f));
  // As QEMU's qcow2_do_open: the external data file bit without the extension naming the file
  // leaves the data nowhere ("'data-file' is required for this image"); nothing to check.
  if (h.has(qcow2::kIncompatExternalData) && h.external_data_file.empty()) {
    co_return make_error(ErrorCode::kCorruption,
                         f.name() + ": 'data-file' is required for this image", EINVAL);
  }
  CO_ASSIGN_OR_RETURN(uint64_t file_size, f.size());
  CheckResult res;
  res.total_clusters = div_round_up(h.size, h.cluster_size());
  Checker c(f, h, file_size, mode, res);
  CO_RETURN_IF_ERROR(co_await c.count_references());
  CO_RETURN_IF_ERROR(co_await c.compare_and_repair());
  CO_RETURN_IF_ERROR(co_await c.check_copied());
  co_return res;
}

// Clears the dirty and corrupt bits and the unknown autoclear bits (bitmaps are counted as
// referenced, so a repair keeps them and their bit), each with one
// in-place field write (spec: "incompatible_features", "autoclear_features").
Task<Status> mark_clean(File& f) {
  CO_ASSIGN_OR_RETURN(Header h, co_await qcow2::read_header(f));
  if (h.version < 3) co_return Status{};
  const uint64_t clean = qcow2::kIncompatDirty | qcow2::kIncompatCorrupt;
  const Header next = qcow2::header_for_rewrite(h);
  if (!(h.incompatible_features & clean) && next.autoclear_features == h.autoclear_features) {
    co_return Status{};
  }
  uint8_t b[8];
  if (next.autoclear_features != h.autoclear_features) {
    store_be64(b, next.autoclear_features);
    CO_RETURN_IF_ERROR(co_await f.write(qcow2::kOffAutoclearFeatures, b, 8));
  }
  store_be64(b, h.incompatible_features & ~clean);
  CO_RETURN_IF_ERROR(co_await f.write(qcow2::kOffIncompatibleFeatures, b, 8));
  co_return co_await f.flush();
}

}  // namespace

Task<Result<CheckResult>> check_qcow2(File& f, RepairMode mode) {
  if (mode != RepairMode::kNone && f.read_only()) {
    co_return read_only_error(f.name() + ": cannot repair an image opened read-only");
  }
  CO_ASSIGN_OR_RETURN(CheckResult out, co_await one_pass(f, mode));
  if (mode == RepairMode::kNone) co_return out;
  if (out.corruptions_fixed || out.leaks_fixed) {
    CO_ASSIGN_OR_RETURN(CheckResult again, co_await one_pass(f, RepairMode::kNone));
    again.corruptions_fixed = out.corruptions_fixed;
    again.leaks_fixed = out.leaks_fixed;
    out.messages.insert(out.messages.end(), again.messages.begin(), again.messages.end());
    again.messages = std::move(out.messages);
    out = std::move(again);
  }
  if (out.corruptions == 0 && out.check_errors == 0) CO_RETURN_IF_ERROR(co_await mark_clean(f));
  co_return out;
}

}  // namespace img
