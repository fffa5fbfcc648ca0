// Sparse detection for convert (qemu-img convert -S): which parts of a buffer of data read from
// the source are written as data and which as zeros.
//
// The rules are qemu-img 7.2's (is_allocated_sectors_min in qemu-img.c), so a destination's
// allocation follows -S as qemu-img's does: the buffer is looked at in 512-byte sectors; a
// buffer that starts with zeros starts with a zero piece (whatever its length); once data has
// started, runs of zeros shorter than min_sparse stay inside the data piece, and a run of at
// least min_sparse ends it. Piece ends between data and zeros are moved to multiples of
// `alignment` (the largest power of two <= min_sparse, at least 512) so that writes start and
// end aligned and the destination needs no read-modify-write.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace img::convert_internal {

struct SparsePiece {
  bool data = false;
  uint64_t length = 0;  // > 0 for a non-empty buffer
};

// The first piece of buf (len bytes holding the image's [off, off+len)). REQUIRES: min_sparse
// and alignment multiples of 512, alignment a power of two.
SparsePiece first_sparse_piece(const uint8_t* buf, uint64_t len, uint64_t off, uint64_t min_sparse,
                               uint64_t alignment);

// The alignment qemu-img uses for min_sparse.
uint64_t sparse_alignment(uint64_t min_sparse);

}  // namespace img::convert_internal
