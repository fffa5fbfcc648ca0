// img bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [--no-drain] [-i AIO] [-n]
// [-o OFFSET] [--pattern=BYTE] [-q] [-s SIZE] [-S STEP] [-t CACHE] [-U] [-w] [--random]
// [--seed=N] FILE: qemu-img 7.2's bench. COUNT requests of SIZE bytes, DEPTH of them in flight,
// at OFFSET, OFFSET+STEP, ... wrapping as qemu-img wraps (the next offset modulo the image
// size); reads, or writes of the pattern byte with -w, optionally with a flush every N
// completions (after draining what is in flight, unless --no-drain). The output is qemu-img's
// two lines. --random (ours) sends each request to a random multiple of STEP past OFFSET.
#include <chrono>
#include <cinttypes>
#include <climits>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <vector>

#include "common.h"
#include "img/image.h"

namespace imgcli {
namespace {

// More coroutines than this in flight buys nothing (the io_uring ring is smaller) and a depth of
// 2^31 must not cost 2^31 frames: qemu-img 7.2 aborts on it trying to allocate 16 EiB.
constexpr uint64_t kMaxWorkers = 65536;

struct BenchArgs {
  uint64_t count = 75000, depth = 64, bufsize = 4096, step = 0, offset = 0;
  uint64_t flush_interval = 0;
  bool write = false, drain = true, random = false;
  int pattern = 0;
  uint64_t seed = 1;
};

// The shared state of one run: the workers (one request in flight each) take the next offset,
// count completions and decide on flushes.
struct Bench {
  img::IoLoop& loop;
  img::BlockDriver& disk;
  const BenchArgs& a;
  uint64_t image_size;
  uint8_t* buf;
  uint64_t next_offset;
  uint64_t issued = 0, completed = 0, in_flight = 0, workers = 0;
  bool draining = false;  // a drained flush is due: issue nothing until in_flight is 0
  std::optional<img::Error> error;
  std::mt19937_64 rng;
  std::coroutine_handle<> waiter;  // run() waits here for the last worker

  uint64_t take_offset() {
    if (a.random) {
      uint64_t span = image_size >= a.offset + a.bufsize ? image_size - a.offset - a.bufsize : 0;
      uint64_t slots = a.step ? span / a.step : 0;
      return a.offset + a.step * std::uniform_int_distribution<uint64_t>(0, slots)(rng);
    }
    // qemu-img 7.2's bench_cb: the next offset modulo the image size (0 when one buffer covers
    // the image). A request that then straddles the end fails with EIO there, and here too:
    // the same arguments send the same requests (measured with strace; tests/img/bench_test.cc).
    uint64_t off = next_offset;
    next_offset += a.step;
    next_offset = image_size <= a.bufsize ? 0 : next_offset % image_size;
    return off;
  }
};

img::Task<void> worker(Bench& b);

void spawn_worker(Bench& b) {
  ++b.workers;
  b.loop.spawn(worker(b));
}

void worker_done(Bench& b) {
  if (--b.workers == 0 && b.waiter) b.loop.post(b.waiter);
}

// --no-drain's flush: beside the requests, which go on (qemu's bench_undrained_flush_cb).
img::Task<void> undrained_flush(Bench& b) {
  img::Status f = co_await b.disk.flush();
  if (!f && !b.error) b.error = f.error();
  worker_done(b);
}

img::Task<void> worker(Bench& b) {
  while (!b.error && !b.draining && b.issued < b.a.count) {
    uint64_t off = b.take_offset();
    ++b.issued;
    ++b.in_flight;
    img::Status s;
    if (off + b.a.bufsize > b.image_size) {
      s = img::io_error(EIO, "a request past the end of the image");  // as qemu's block layer
    } else if (b.a.bufsize == 0) {
      s = {};
    } else if (b.a.write) {
      s = co_await b.disk.write(off, b.buf, b.a.bufsize);
    } else {
      s = co_await b.disk.read(off, b.buf, b.a.bufsize);
    }
    --b.in_flight;
    ++b.completed;
    if (!s) {
      if (!b.error) b.error = s.error();
      break;
    }
    if (b.a.flush_interval && b.completed % b.a.flush_interval == 0) {
      if (b.a.drain) {
        b.draining = true;
      } else {
        ++b.workers;
        b.loop.spawn(undrained_flush(b));
      }
    }
    if (b.draining && b.in_flight == 0) {
      // Every other worker stopped when it saw `draining`; this one flushes and restarts them.
      img::Status f = co_await b.disk.flush();
      if (!f && !b.error) b.error = f.error();
      b.draining = false;
      uint64_t want = std::min<uint64_t>({b.a.depth, kMaxWorkers, b.a.count - b.issued});
      while (b.workers < want) spawn_worker(b);
    }
  }
  worker_done(b);
}

// Waits until every worker has ended.
struct AllWorkersDone {
  Bench& b;
  bool await_ready() const noexcept { return b.workers == 0; }
  void await_suspend(std::coroutine_handle<> h) { b.waiter = h; }
  void await_resume() const noexcept {}
};

img::Task<img::Status> run(Bench& b) {
  uint64_t n = std::min<uint64_t>({b.a.depth, kMaxWorkers, b.a.count});
  for (uint64_t i = 0; i < n; ++i) spawn_worker(b);
  co_await AllWorkersDone{b};
  if (b.error) co_return img::Unexpected(std::move(*b.error));
  co_return img::Status{};
}

// qemu_strtoi-style: the whole of s as an integer (decimal, 0x hex or 0 octal) within [lo, hi].
std::optional<long long> parse_int(const std::string& s, long long lo, long long hi) {
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return std::nullopt;
  return v;
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  CLI::App app(
      "Run a simple benchmark of sequential (or, with --random, random) requests on an image\n"
      "Example: img bench -w -c 100000 -d 32 -s 64k -t none disk.qcow2",
      "img bench");
  std::string count_text, depth_text, fmt, flush_text, aio, size_text, step_text, offset_text;
  std::string pattern_text, cache = "writeback";
  std::vector<std::string> files;
  bool no_drain = false, native = false, quiet = false, force_share = false;
  BenchArgs a;
  app.add_option("-c,--count", count_text, "number of requests (default 75000)");
  app.add_option("-d,--depth", depth_text, "requests in flight at once (default 64)");
  app.add_option("-f,--format", fmt, "the image's format (probed if not given)");
  app.add_option("--flush-interval", flush_text, "flush after every N requests (-w only)");
  app.add_flag("--no-drain", no_drain, "flush without waiting for the requests in flight");
  app.add_option("-i,--aio", aio, "threads, native or io_uring (img always uses io_uring)");
  app.add_flag("-n,--native", native, "as -i native (needs -t none or directsync)");
  app.add_option("-o,--offset", offset_text, "the first request's offset (default 0)");
  app.add_option("--pattern", pattern_text, "the byte written with -w (default 0)");
  app.add_flag("-q,--quiet", quiet, "accepted; qemu-img 7.2's bench prints its lines anyway");
  app.add_option("-s,--buffer-size", size_text, "bytes per request (default 4096)");
  app.add_option("-S,--step-size", step_text, "bytes between requests (default the size)");
  app.add_option("-t,--cache", cache, "cache mode: none, writeback (default), unsafe, ...");
  app.add_flag("-U,--force-share", force_share, "open the image shared, taking no locks others would trip on (read tests only)");
  app.add_flag("-w,--write", a.write, "write instead of read");
  app.add_flag("--random", a.random, "ours: random offsets (multiples of the step past -o)");
  app.add_option("--seed", a.seed, "ours: the seed of --random's offsets (default 1)");
  app.add_option("FILE", files, "the image");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  (void)quiet;  // qemu-img 7.2 parses -q for bench and prints its report all the same

  // Checks in qemu-img's order, with its words.
  if (!count_text.empty()) {
    auto v = parse_int(count_text, 1, INT_MAX);
    // qemu takes -c 0 (and sends nothing); strtoi's range is what it refuses.
    if (!v && count_text != "0") return fail("Invalid request count specified");
    a.count = v ? *v : 0;
  }
  if (!depth_text.empty()) {
    // qemu-img 7.2 takes -d 0 and then waits forever for a request it never sends: refused.
    auto v = parse_int(depth_text, 1, INT_MAX);
    if (!v) return fail("Invalid queue depth specified");
    a.depth = *v;
  }
  if (!aio.empty() && aio != "threads" && aio != "native" && aio != "io_uring") {
    return fail("Invalid aio option: " + aio);
  }
  native = native || aio == "native";
  if (!offset_text.empty()) {
    auto v = cvtnum("offset", offset_text);
    if (!v) return kExitError;
    a.offset = *v;
  }
  if (!size_text.empty()) {
    auto v = cvtnum("buffer size", size_text, 0, INT_MAX);
    if (!v) return kExitError;
    a.bufsize = *v;
  }
  if (!step_text.empty()) {
    auto v = cvtnum("step_size", step_text, 0, INT_MAX);
    if (!v) return kExitError;
    a.step = *v;
  }
  auto mode = img::parse_cache_mode(cache);
  if (!mode) return fail("Invalid cache mode");
  if (!pattern_text.empty()) {
    auto v = parse_int(pattern_text, 0, 0xff);
    if (!v) return fail("Invalid pattern byte specified");
    a.pattern = static_cast<int>(*v);
  }
  if (!flush_text.empty()) {
    auto v = parse_int(flush_text, 0, INT_MAX);
    if (!v) return fail("Invalid flush interval specified");
    a.flush_interval = *v;
  }
  a.drain = !no_drain;
  if (files.size() != 1) return usage_error("Expecting one image file name");
  if (a.flush_interval && !a.write)
    return fail("--flush-interval is only available in write tests");
  if (a.flush_interval && a.flush_interval < a.depth) {
    return fail("Flush interval can't be smaller than depth");
  }
  const std::string& file = files[0];
  if (!fmt.empty() && !known_format(fmt)) {
    return fail("Could not open '" + file + "': Unknown driver '" + fmt + "'");
  }
  if (force_share && a.write) {
    return fail("Could not open '" + file +
                "': force-share=on can only be used with read-only images");
  }
  if (native && !mode->direct) {
    return fail("Could not open '" + file +
                "': aio=native was specified, but it requires cache.direct=on, which was not "
                "specified.");
  }
  if (a.step == 0) a.step = a.bufsize;

  auto loop = make_loop();
  if (!loop) return kExitError;
  img::OpenOptions opts{.format = fmt, .read_only = !a.write};
  opts.force_share = force_share;
  mode->apply_to(opts);
  auto disk = loop->run(img::open_image(*loop, file, opts));
  if (!disk) return fail(open_error(file, disk.error()));

  // One buffer for every request, as qemu-img uses one: reads land in it, writes send it.
  // Aligned for O_DIRECT (-t none).
  size_t alloc = std::max<uint64_t>(a.bufsize, 1);
  alloc = (alloc + 4095) / 4096 * 4096;
  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(4096, alloc));
  if (!buf) return fail("cannot allocate the " + std::to_string(a.bufsize) + "-byte buffer");
  std::memset(buf, a.pattern, alloc);

  std::printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
              " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
              a.count, a.write ? "write" : "read", a.bufsize, a.depth, a.offset, a.step);
  if (a.flush_interval) std::printf("Sending flush every %" PRIu64 " requests\n", a.flush_interval);
  std::fflush(stdout);

  Bench b{.loop = *loop,
          .disk = **disk,
          .a = a,
          .image_size = (*disk)->size(),
          .buf = buf,
          .next_offset = a.offset,
          .rng = std::mt19937_64(a.seed)};
  auto t0 = std::chrono::steady_clock::now();
  img::Status s = loop->run(run(b));
  auto t1 = std::chrono::steady_clock::now();
  std::free(buf);
  if (!s) {
    (void)loop->run((*disk)->close());
    return fail("Failed request: " + reason(s.error()));
  }
  auto closed = loop->run((*disk)->close());
  if (!closed) return fail(file + ": " + reason(closed.error()));
  std::printf("Run completed in %3.3f seconds.\n", std::chrono::duration<double>(t1 - t0).count());
  return kExitOk;
}

}  // namespace imgcli
