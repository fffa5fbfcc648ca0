// libFuzzer target: backing-chain resolution (libimg/src/chain/open_chain.cc) over an in-memory
// file system (tests/libimg/mem_fs.h). The input is a little file system: parts separated by
// kSeparator, each "path\n" then the file's bytes; the first part is the top image. Names in the
// images' headers resolve against the overlay's folder, so loops (by any spelling of a name),
// depth, missing files and odd names ("", "/", "../x", "a\0b") are all reachable. Each input is
// opened under every BackingPolicy, with the default depth limit and one from the input's last
// byte.
// Properties checked (a violation is a crash):
//   - kRefuse opens only an image that names no backing file; kIgnore never attaches one;
//   - an opened chain is no deeper than max_chain_depth below the top and has no loop;
//   - no file is ever opened for writing below the top image;
//   - every byte of the opened image reads (or fails with an error), and block_status walks it.
// Seeds: testdata/fuzz/qcow2_chain (real chains made with qemu-img by
// testdata/fuzz/make-seeds.sh).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "img/image.h"
#include "img/io_loop.h"
#include "img/mem_file.h"
#include "mem_fs.h"
#include "qcow2/open.h"

namespace {

constexpr std::string_view kSeparator = "#IMGFUZZ#";
constexpr size_t kMaxInput = 1 << 20;
constexpr size_t kMaxFiles = 8;
// Reads cover at most this much of the guest (a hostile size may say 2^56 bytes).
constexpr uint64_t kMaxWalk = 4 << 20;

struct Part {
  std::string path;
  std::string_view bytes;
};

std::vector<Part> split(std::string_view in) {
  std::vector<Part> parts;
  while (parts.size() < kMaxFiles) {
    size_t end = in.find(kSeparator);
    std::string_view chunk = in.substr(0, end);
    size_t nl = chunk.find('\n');
    Part p;
    if (nl == std::string_view::npos) {
      p.path = std::string(chunk.substr(0, 64));
      p.bytes = {};
    } else {
      p.path = std::string(chunk.substr(0, std::min<size_t>(nl, 256)));
      p.bytes = chunk.substr(nl + 1);
    }
    if (p.path.empty()) p.path = "top.qcow2";
    parts.push_back(p);
    if (end == std::string_view::npos) break;
    in.remove_prefix(end + kSeparator.size());
  }
  return parts;
}

size_t chain_length(const img::BlockDriver& d) {
  size_t n = 1;
  for (const img::BlockDriver* b = d.backing(); b; b = b->backing()) {
    if (++n > 1000) __builtin_trap();  // a cycle of drivers
  }
  return n;
}

void walk(img::IoLoop& loop, img::BlockDriver& d) {
  const uint64_t end = std::min(d.size(), kMaxWalk);
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < end; off += buf.size()) {
    uint64_t len = std::min<uint64_t>(buf.size(), end - off);
    if (!loop.run(d.read(off, buf.data(), len))) break;
  }
  for (uint64_t off = 0, steps = 0; off < end && steps < 4096; ++steps) {
    auto st = loop.run(d.block_status(off, end - off));
    if (!st) break;
    if (st->length == 0 || st->length > end - off) __builtin_trap();  // no progress / overrun
    off += st->length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<img::IoLoop> loop = [] {
    auto l = img::IoLoop::create();
    if (!l) std::abort();
    return std::move(*l);
  }();
  if (size > kMaxInput) return 0;
  std::vector<Part> parts = split(std::string_view(reinterpret_cast<const char*>(data), size));
  struct Mode {
    img::BackingPolicy policy;
    unsigned depth;
  };
  // The default depth limit, and a small one from the input's last byte.
  const Mode modes[] = {{img::BackingPolicy::kOpen, 64},
                        {img::BackingPolicy::kOpen, size ? data[size - 1] % 4u : 2u},
                        {img::BackingPolicy::kRefuse, 64},
                        {img::BackingPolicy::kIgnore, 64}};
  for (const auto [policy, depth] : modes) {
    img::test::MemFs fs(loop.get());
    for (const Part& p : parts) {
      fs.create(p.path).bytes().assign(p.bytes.begin(), p.bytes.end());
    }
    auto top = fs.open(*loop, parts[0].path, {.read_only = true});
    if (!top) return 0;
    auto d = loop->run(img::open_image_file(
        *loop, std::move(*top),
        {.read_only = true, .backing = policy, .max_chain_depth = depth, .opener = &fs}));
    if (fs.opens_for_write() != 0) __builtin_trap();
    if (!d) continue;
    const size_t n = chain_length(**d);
    if (policy != img::BackingPolicy::kOpen && n != 1) __builtin_trap();
    if (policy == img::BackingPolicy::kRefuse && img::qcow2::backing_reference(**d)) {
      __builtin_trap();  // refused mode opened an image that names a backing file
    }
    if (n > depth + 1) __builtin_trap();
    walk(*loop, **d);
    (void)loop->run((*d)->close());
  }
  return 0;
}
