// libFuzzer target: check_qcow2 (libimg/src/qcow2/check*.cc) on an in-memory image built from the
// input: a read-only check, then a full repair, then a check of the repaired image. Offsets in
// the input are hostile; the checker must report them, never crash or allocate without bound.
// Seeds: testdata/fuzz/qcow2_check (whole small images, testdata/fuzz/make-seeds.sh).

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "img/io_loop.h"
#include "img/mem_file.h"
#include "img/qcow2.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<img::IoLoop> loop = [] {
    auto l = img::IoLoop::create();
    if (!l) std::abort();
    return std::move(*l);
  }();
  img::MemFile f;
  f.bytes().assign(data, data + size);
  auto r = loop->run(img::check_qcow2(f, img::RepairMode::kNone));
  if (!r) return 0;
  auto fixed = loop->run(img::check_qcow2(f, img::RepairMode::kAll));
  if (fixed) {
    auto again = loop->run(img::check_qcow2(f, img::RepairMode::kNone));
    (void)again;
  }
  return 0;
}
