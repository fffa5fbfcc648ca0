// resize_image and its size argument: what qemu-img 7.2's img_resize checks before it truncates
// the image (qemu-img.c), so that `img resize` refuses and accepts the same things.
#include <cstdint>
#include <string>

#include "img/ops.h"

namespace img {

Result<SizeChange> parse_size_change(std::string_view s) {
  SizeChange c;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    c.sign = s[0] == '+' ? 1 : -1;
    s.remove_prefix(1);
  }
  auto n = parse_size(s, UINT64_MAX);
  if (!n && n.error().message().find("too large") != std::string::npos) {
    return invalid_argument("Value '" + std::string(s) + "' is out of range for parameter 'size'");
  }
  if (!n) {
    return invalid_argument(
        "Parameter 'size' expects a non-negative number below 2^64\n"
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
        "and exabytes, respectively.");
  }
  c.amount = *n;
  return c;
}

Result<uint64_t> resolve_size_change(uint64_t current, SizeChange change) {
  // qemu-img: total_size = current_size + n * relative, all int64_t; the wrap-around of a huge
  // n is what makes "8E" (2^63) come out negative, and refused.
  uint64_t total = change.amount;
  if (change.sign > 0) total = current + change.amount;
  if (change.sign < 0) total = current - change.amount;
  if (static_cast<int64_t>(total) <= 0) return invalid_argument("New image size must be positive");
  return total;
}

Task<Status> resize_image(BlockDriver& drv, uint64_t new_size, const ResizeOptions& opts) {
  uint64_t current = drv.size();
  if (new_size <= current && opts.preallocation != Preallocation::kOff) {
    co_return invalid_argument("Preallocation can only be used for growing images");
  }
  if (new_size < current && !opts.allow_shrink) {
    co_return invalid_argument("Use the --shrink option to perform a shrink operation.");
  }
  CO_RETURN_IF_ERROR(co_await drv.resize(new_size, opts));
  co_return co_await drv.flush();
}

}  // namespace img
