// libFuzzer target: qcow2 header decoding (libimg/src/qcow2/header.cc). The input is the start of
// an image file; the file size is taken from the input so the table bounds checks are exercised.
// Whatever decodes must re-encode without crashing.

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <span>

#include "qcow2/format.h"
#include "qcow2/layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  // The last 8 bytes, when present, stretch the claimed file size past the buffer.
  uint64_t file_size = size;
  if (size >= 8) file_size += img::load_be64(data + size - 8) % (1ull << 40);
  auto h = img::qcow2::decode_header(in, file_size);
  if (h) {
    img::qcow2::Header next = img::qcow2::header_for_rewrite(*h);
    (void)img::qcow2::feature_bit_name(next, 0, 0);
    auto enc = img::qcow2::encode_header(next);
    if (enc) {
      // What we encode we must decode again.
      auto back = img::qcow2::decode_header(*enc, std::max<uint64_t>(file_size, enc->size()));
      if (!back) __builtin_trap();
    }
  }
  return 0;
}
