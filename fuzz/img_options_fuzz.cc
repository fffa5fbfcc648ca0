// libFuzzer target: img's argument parsers in libimg/src/ops (size.cc, create_options.cc):
// qemu's size strings ("1.5G", "0x200", "+1G" for resize) and create's -o key=value,... lists.
// The first byte picks the format (bit 0: qcow2 or raw) and the size limit (bit 1); the rest is
// lines: the first is a size, every line is one -o string.
// Properties checked (a violation is a crash; an uncaught exception aborts, so it is one too):
//   - a parsed size is within its limit and parses back to itself from its decimal form;
//   - a size change resolves without overflow (a result that is not positive is refused);
//   - whatever parse_create_options accepts, to_create_options checks without throwing, and the
//     options it accepts are in range (cluster size a power of two in 512..2 MiB, refcount
//     width a power of two up to 64);
//   - describe_create_options and the help text never fail;
//   - to_create_options on a list filled in without parse_create_options does not throw.
// Seeds: testdata/fuzz/img_options (option strings from qemu-img's documentation and tests).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "img/ops.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  const std::string format = (data[0] & 1) ? "qcow2" : "raw";
  const uint64_t max = (data[0] & 2) ? UINT64_MAX : uint64_t{INT64_MAX};
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<std::string> lines;
  for (size_t start = 0; start <= in.size();) {
    size_t nl = in.find('\n', start);
    if (nl == std::string_view::npos) nl = in.size();
    lines.emplace_back(in.substr(start, nl - start));
    start = nl + 1;
  }

  const std::string& first = lines[0];
  if (auto v = img::parse_size(first, max)) {
    if (*v > max) __builtin_trap();
    auto again = img::parse_size(std::to_string(*v), max);
    if (!again || *again != *v) __builtin_trap();
  }
  if (auto c = img::parse_size_change(first)) {
    for (uint64_t current : {uint64_t{0}, uint64_t{512}, uint64_t{1} << 40, uint64_t{INT64_MAX}}) {
      auto r = img::resolve_size_change(current, *c);
      if (r && (*r == 0 || *r > uint64_t{INT64_MAX})) __builtin_trap();
    }
  }

  // A list a library caller filled in directly ("key=value" a line, values unchecked): the
  // conversion checks them too, and must not throw.
  img::CreateOptionList raw;
  for (const std::string& l : lines) {
    size_t eq = l.find('=');
    raw.items.emplace_back(l.substr(0, eq), eq == std::string::npos ? "" : l.substr(eq + 1));
  }
  (void)img::to_create_options(format, raw);

  auto list = img::parse_create_options(format, lines);
  if (!list) return 0;
  auto o = img::to_create_options(format, *list);
  if (o) {
    if (o->cluster_size < 512 || o->cluster_size > (2u << 20) ||
        (o->cluster_size & (o->cluster_size - 1))) {
      __builtin_trap();
    }
    if (o->refcount_bits == 0 || o->refcount_bits > 64 ||
        (o->refcount_bits & (o->refcount_bits - 1))) {
      __builtin_trap();
    }
  }
  (void)img::describe_create_options(format, *list, o ? o->size : 0);
  if (list->help) (void)img::create_options_help(format);
  return 0;
}
