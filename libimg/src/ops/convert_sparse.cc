// Sparse detection: see convert_sparse.h.
#include "ops/convert_sparse.h"

#include <algorithm>
#include <bit>

#include "img/ops.h"

namespace img::convert_internal {
namespace {

constexpr uint64_t kSector = 512;

// The run of sectors from the start of buf that are all zero or all not, its end moved to an
// alignment boundary where the next piece differs.
SparsePiece same_run(const uint8_t* buf, uint64_t len, uint64_t off, uint64_t alignment) {
  auto sector_zero = [&](uint64_t at) { return is_zero(buf + at, std::min(kSector, len - at)); };
  const bool zero = sector_zero(0);
  uint64_t i = std::min(kSector, len);
  while (i < len && sector_zero(i) == zero) i = std::min(i + kSector, len);
  if (i == len) return {!zero, len};
  uint64_t tail = (off + i) % alignment;
  if (tail == 0) return {!zero, i};
  // Data follows: its write covers this partial block anyway, so a zero run that does not reach
  // back to the previous boundary is written as data; a longer one stops at that boundary.
  if (zero && i <= tail) return {true, std::min(i + alignment - tail, len)};
  if (!zero) return {true, std::min(i + alignment - tail, len)};
  return {false, i - tail};
}

}  // namespace

uint64_t sparse_alignment(uint64_t min_sparse) {
  return std::max<uint64_t>(kSector, min_sparse ? std::bit_floor(min_sparse) : kSector);
}

SparsePiece first_sparse_piece(const uint8_t* buf, uint64_t len, uint64_t off, uint64_t min_sparse,
                               uint64_t alignment) {
  if (len == 0) return {};
  min_sparse = std::min(min_sparse, len);
  SparsePiece first = same_run(buf, len, off, alignment);
  if (!first.data) return first;
  // Data: take in the zero runs shorter than min_sparse that lie between data.
  uint64_t used = first.length, checked = first.length;
  while (checked < len) {
    SparsePiece p = same_run(buf + checked, len - checked, off + checked, alignment);
    checked += p.length;
    if (p.data) {
      used = checked;
    } else if (p.length >= min_sparse) {
      break;
    }
  }
  return {true, used};
}

}  // namespace img::convert_internal
