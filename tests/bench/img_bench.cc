// img_bench: drives one I/O pattern through libimg's open_image(..., {.direct = true}) with N
// coroutines in flight, the way `qemu-img bench` does through QEMU's block layer.
//
//   img_bench read     FILE COUNT DEPTH SIZE STEP   (qemu-img bench -c COUNT -d DEPTH
//                                                    -s SIZE -S STEP)
//   img_bench write    FILE COUNT DEPTH SIZE STEP   (the same with -w)
//   img_bench randread FILE COUNT DEPTH SIZE        (uniformly random SIZE-aligned offsets)
//
// Offsets start at 0 and advance by STEP, wrapping at the image size, as qemu-img bench's do.
// IMG_BENCH_CACHE=writeback opens without O_DIRECT (qemu-img bench -t writeback); the default,
// none, is O_DIRECT like -t none.
// Buffers are std::aligned_alloc(4096, SIZE). With O_DIRECT asked for, it checks in
// /proc/self/fdinfo that the image file really is open with O_DIRECT (exit 1 if not).
// Prints "seconds=S ops=N iops=X mib_per_s=Y o_direct=0|1 avg_depth=D" on stdout.
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "img/image.h"
#include "img/ops.h"
#include "o_direct_check.h"

namespace {

using img::Task;

struct Bench {
  img::BlockDriver* disk;
  bool write = false;
  bool random = false;
  uint64_t count = 0;
  uint64_t size = 0;
  uint64_t step = 0;
  uint64_t issued = 0;
  uint64_t offset = 0;
  std::mt19937_64 rng{42};
  std::string error;
  unsigned running = 0;
  uint64_t in_flight = 0;      // requests issued and not yet completed
  uint64_t depth_sum = 0;      // sum of in_flight seen by each request as it is issued
  std::coroutine_handle<> waiter;
  img::IoLoop* loop;

  uint64_t next_offset() {
    if (random) return (rng() % (disk->size() / size)) * size;
    uint64_t off = offset;
    offset = (offset + step) % disk->size();
    if (offset + size > disk->size()) offset = 0;
    return off;
  }
};

Task<void> worker(Bench& b) {
  void* buf = std::aligned_alloc(4096, b.size);
  std::memset(buf, 0xa5, b.size);
  while (b.error.empty() && b.issued < b.count) {
    ++b.issued;
    uint64_t off = b.next_offset();
    b.depth_sum += b.in_flight++;
    img::Status s = b.write ? co_await b.disk->write(off, buf, b.size)
                            : co_await b.disk->read(off, buf, b.size);
    --b.in_flight;
    if (!s) b.error = s.error().to_string();
  }
  std::free(buf);
  if (--b.running == 0 && b.waiter) b.loop->post(b.waiter);
}

struct AllDone {
  Bench& b;
  bool await_ready() const noexcept { return b.running == 0; }
  void await_suspend(std::coroutine_handle<> h) { b.waiter = h; }
  void await_resume() const noexcept {}
};

Task<img::Status> run(Bench& b, unsigned depth) {
  b.running = depth;
  for (unsigned i = 0; i < depth; ++i) b.loop->spawn(worker(b));
  co_await AllDone{b};
  if (!b.error.empty()) co_return img::make_error(img::ErrorCode::kIo, b.error);
  if (b.write) co_return co_await b.disk->flush();
  co_return img::Status{};
}


int usage() {
  std::fprintf(stderr,
               "usage: img_bench read|write FILE COUNT DEPTH SIZE STEP\n"
               "       img_bench randread FILE COUNT DEPTH SIZE\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage();
  std::string mode = argv[1];
  if (mode != "read" && mode != "write" && mode != "randread") return usage();
  if (mode != "randread" && argc < 7) return usage();
  auto count = img::parse_size(argv[3]);
  auto depth = img::parse_size(argv[4]);
  auto size = img::parse_size(argv[5]);
  auto step = mode == "randread" ? size : img::parse_size(argv[6]);
  if (!count || !depth || !size || !step || *depth == 0 || *size == 0 || *size % 4096 != 0) {
    return usage();
  }
  auto loop = img::IoLoop::create({.entries = 512}).value();
  const char* cache = std::getenv("IMG_BENCH_CACHE");
  bool direct = cache == nullptr || std::string(cache) == "none";
  img::OpenOptions oo{.read_only = mode != "write", .direct = direct};
  auto disk = loop->run(img::open_image(*loop, argv[2], oo));
  if (!disk) {
    std::fprintf(stderr, "img_bench: %s: %s\n", argv[2], disk.error().to_string().c_str());
    return 1;
  }
  int o_direct = bench::file_opened_direct(argv[2]);
  if (direct && o_direct != 1) {
    std::fprintf(stderr, "img_bench: %s is not open with O_DIRECT\n", argv[2]);
    return 1;
  }
  Bench b{.disk = disk->get(), .write = mode == "write", .random = mode == "randread"};
  b.count = *count;
  b.size = *size;
  b.step = *step;
  b.loop = loop.get();
  auto t0 = std::chrono::steady_clock::now();
  img::Status s = loop->run(run(b, static_cast<unsigned>(*depth)));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!s) {
    std::fprintf(stderr, "img_bench: %s\n", s.error().to_string().c_str());
    return 1;
  }
  if (auto c = loop->run((*disk)->close()); !c) {
    std::fprintf(stderr, "img_bench: close: %s\n", c.error().to_string().c_str());
    return 1;
  }
  // avg_depth: requests already in flight when one is issued (DEPTH - 1 when the queue is kept
  // full; lower when completions are resumed late and the queue runs dry between batches).
  std::printf("seconds=%.3f ops=%llu iops=%.0f mib_per_s=%.1f o_direct=%d avg_depth=%.1f\n", secs,
              static_cast<unsigned long long>(b.count), b.count / secs,
              b.count * static_cast<double>(b.size) / secs / (1 << 20), o_direct,
              static_cast<double>(b.depth_sum) / static_cast<double>(b.count));
  return 0;
}
