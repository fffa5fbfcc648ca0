// img commit [-f fmt] [-t cache] [-b base] [-d] [-p] [-q] [-r rate] FILE: qemu-img 7.2's commit.
// What the images above the base hold (FILE, and with -b the images between) is written into the
// base: FILE's backing file, or BASE, which must be in FILE's chain. Then FILE is emptied (every
// cluster unallocated, the file cut back), unless -d, or -b (which implies -d, as qemu-img says:
// the images between FILE and BASE no longer match their backing files, and FILE keeps the
// data it hides them with). Output "Image committed.", exit 0; errors exit 1, in qemu-img's words.
#include <chrono>
#include <cstdio>
#include <thread>

#include "common.h"
#include "img/block_map.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "progress.h"
#include "writable_base.h"

namespace imgcli {
namespace {

// qemu's bdrv_find_backing_image: BASE names layer i when it is the backing file name that
// layer i-1 records, or (combined with layer i-1's folder when relative) the same file.
// Returns 0 if no layer below the top matches.
size_t find_base(img::IoLoop& loop, const std::vector<img::ChainLayer>& layers,
                 const std::string& base) {
  const img::FileOpener& opener = img::host_file_opener();
  for (size_t i = 1; i < layers.size(); ++i) {
    const std::string& over = layers[i - 1].path;
    auto f = img::open_host_file(loop, over, {.read_only = true});
    if (f) {
      auto info = loop.run(img::read_qcow2_info(**f));
      if (info && info->backing_file == base) return i;
    }
    if (opener.identity(img::combine_backing_path(over, base)) == opener.identity(layers[i].path)) {
      return i;
    }
  }
  return 0;
}

// -r: at most rate bytes a second, enforced by sleeping on the loop thread between chunks.
class RateLimit {
 public:
  explicit RateLimit(uint64_t rate) : rate_(rate), start_(std::chrono::steady_clock::now()) {}
  void account(uint64_t done) {
    if (rate_ == 0) return;
    auto due = start_ + std::chrono::duration<double>(static_cast<double>(done) /
                                                      static_cast<double>(rate_));
    std::this_thread::sleep_until(due);
  }

 private:
  uint64_t rate_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

int run_commit(const std::vector<std::string>& args) {
  CLI::App app("Commit the changes recorded in FILE into its backing file (or BASE)", "img commit");
  std::string fmt, cache = "writeback", base_arg, rate_text;
  std::vector<std::string> files;
  bool quiet = false, progress = false, drop = false;
  app.add_option("-f", fmt, "format of FILE (probed if not given)");
  app.add_option("-t", cache, "cache mode: none, writeback (default), writethrough, ...");
  app.add_option("-b", base_arg, "the image of FILE's backing chain to commit into (implies -d)");
  app.add_flag("-d", drop, "leave FILE as it is instead of emptying it");
  app.add_option("-r", rate_text, "rate limit in bytes per second (suffixes allowed)");
  app.add_flag("-p", progress, "show progress");
  app.add_flag("-q", quiet, "quiet");
  app.add_option("FILE", files, "the overlay to commit");
  app.footer(
      "Example: img commit -p overlay.qcow2\n"
      "         img commit -b base.qcow2 top.qcow2   (top and everything between into base)");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (files.size() != 1) return usage_error("Expecting one image file name");
  const std::string& file = files[0];
  uint64_t rate = 0;
  if (!rate_text.empty()) {
    auto r = cvtnum("rate limit", rate_text);
    if (!r) return kExitError;
    rate = *r;
  }
  auto mode = img::parse_cache_mode(cache);
  if (!mode) return fail("Invalid cache option: " + cache);
  if (!fmt.empty() && !known_format(fmt)) {
    return fail("Could not open '" + file + "': Unknown driver '" + fmt + "'");
  }

  auto loop = make_loop();
  if (!loop) return kExitError;
  auto layers = loop->run(img::describe_chain(*loop, file, fmt));
  if (!layers) return fail(open_error(file, layers.error()));
  if (layers->size() < 2) return fail("Image does not have a backing file");
  size_t depth = 1;
  if (!base_arg.empty()) {
    depth = find_base(*loop, *layers, base_arg);
    if (depth == 0) {
      return fail("Did not find '" + base_arg + "' in the backing chain of '" + file + "'");
    }
    drop = true;
  }
  const img::ChainLayer& base = (*layers)[depth];

  img::OpenOptions o{.format = fmt};
  mode->apply_to(o);
  auto chain = loop->run(open_chain_with_writable_base(*loop, file, o, base.path, base.format));
  if (!chain) return fail(open_error(file, chain.error()));

  Progress bar(progress && !quiet);
  RateLimit limit(rate);
  img::ConvertOptions copts;
  copts.progress = [&](uint64_t done, uint64_t total) {
    bar.update(done, total);
    limit.account(done);
  };
  if (rate) copts.in_flight = 1;  // a rate is kept chunk by chunk
  auto stats =
      loop->run(img::commit(*loop, *chain->top, static_cast<unsigned>(depth), *chain->base, copts));
  if (!stats) {
    (void)loop->run(chain->base->close());
    return fail("Error committing the image: " + reason(stats.error()));
  }
  auto closed = loop->run(chain->base->close());
  if (!closed) return fail(base.path + ": " + reason(closed.error()));
  if (!drop) {
    // The base holds everything now; FILE reads through to it unchanged once emptied.
    auto emptied = loop->run(chain->top->make_empty());
    if (!emptied) {
      (void)loop->run(chain->top->close());
      return fail("Image committed, but emptying the top image failed: " + reason(emptied.error()));
    }
  }
  auto top_closed = loop->run(chain->top->close());
  if (!top_closed) return fail(file + ": " + reason(top_closed.error()));
  bar.finish();
  if (!quiet) std::printf("Image committed.\n");
  return kExitOk;
}

}  // namespace imgcli
