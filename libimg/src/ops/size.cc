// parse_size: qemu's size strings (util/cutils.c qemu_strtosz as of QEMU 7.2).
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "img/ops.h"

namespace img {
namespace {

// Binary multiple of a suffix letter, or 0 if c is not one.
uint64_t suffix_unit(char c) {
  switch (std::toupper(static_cast<unsigned char>(c))) {
    case 'B':
      return 1;
    case 'K':
      return 1ull << 10;
    case 'M':
      return 1ull << 20;
    case 'G':
      return 1ull << 30;
    case 'T':
      return 1ull << 40;
    case 'P':
      return 1ull << 50;
    case 'E':
      return 1ull << 60;
  }
  return 0;
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text, uint64_t max) {
  std::string s(text);
  auto bad = [&] { return invalid_argument("invalid size '" + s + "'"); };
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  if (i == s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) return bad();
  // A NUL would end the C string strtoull reads: "1\0x" must not read as "1".
  if (s.find('\0') != std::string::npos) return bad();
  const char* start = s.c_str() + i;
  // Decimal unless "0x": qemu reads "010k" as 10 KiB, not octal (strtoull's base 0 would).
  const bool hex = start[0] == '0' && (start[1] == 'x' || start[1] == 'X');
  char* end = nullptr;
  errno = 0;
  unsigned long long whole = std::strtoull(start, &end, hex ? 16 : 10);
  if (errno == ERANGE) return invalid_argument("size '" + s + "' is too large");
  double fraction = 0;
  bool has_fraction = false;
  if (*end == '.') {
    if (hex) return bad();
    has_fraction = true;
    char* fend = end + 1;
    while (std::isdigit(static_cast<unsigned char>(*fend))) ++fend;
    fraction = std::strtod(std::string("0").append(end, fend).c_str(), nullptr);
    end = fend;
  }
  uint64_t unit = 1;
  if (*end != '\0') {
    unit = suffix_unit(*end);
    if (unit == 0) return bad();
    ++end;
  }
  if (*end != '\0') return bad();
  // qemu refuses fractions of a byte ("1.5", "0.5b").
  if (has_fraction && unit == 1) return bad();
  const uint64_t kMax = max;
  if (whole > kMax / unit) return invalid_argument("size '" + s + "' is too large");
  uint64_t value = whole * unit;
  if (has_fraction) {
    double extra = std::floor(fraction * static_cast<double>(unit));
    if (static_cast<double>(kMax - value) < extra) {
      return invalid_argument("size '" + s + "' is too large");
    }
    value += static_cast<uint64_t>(extra);
  }
  return value;
}

}  // namespace img
