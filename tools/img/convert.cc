// img convert [-f fmt] [-O fmt] [-o options] [-B backing [-F fmt]] [-l snapshot] [-c] [-C] [-n]
//             [--target-is-zero] [-t cache] [-T src_cache] [-S size] [-m N] [-W] [-p] [-q]
//             SRC... DST
// copies SRC (several are concatenated) into DST through ops::convert, as qemu-img 7.2 convert
// does: its option meanings and defaults (the target written with cache=unsafe, so nothing is
// flushed to disk; -S 4k; 8 requests in flight; writes in order unless -W), its checks in its
// order and its words. DST is created only after every source opened cleanly.
//
// Intended differences from qemu-img: an invalid -t is refused before DST is created (qemu-img
// creates it, then refuses), and "--target-is-zero" with a backing file exits 1 (qemu-img prints
// the error and exits 0).
#include <cstdio>
#include <memory>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "img/snapshot.h"
#include "progress.h"

namespace imgcli {
namespace {

// qemu-img convert's -S limit: MAX_BUF_SECTORS (32768) sectors of 512 bytes.
constexpr uint64_t kMaxSparse = 32768 * 512;
constexpr unsigned kMaxCoroutines = 16;

struct Args {
  std::string in_fmt, out_fmt = "raw", sparse_text, coroutines_text, cache = "unsafe",
                      src_cache = "writeback", backing, backing_fmt, snapshot;
  std::vector<std::string> opt_strings, files;
  bool progress = false, quiet = false, unordered = false, no_create = false, compress = false,
       target_is_zero = false, copy_range = false, force_share = false;
};

void add_options(CLI::App& app, Args& a) {
  app.add_option("-f", a.in_fmt, "source format (probed if not given)");
  app.add_option("-O", a.out_fmt, "destination format: raw (default) or qcow2");
  app.add_option("-o", a.opt_strings, "destination format options key=value,...")
      ->allow_extra_args(false);
  app.add_option("-B", a.backing,
                 "backing file of the destination (what the source's top "
                 "image does not hold is left to it)");
  app.add_option("-F", a.backing_fmt, "format of the backing file given with -B");
  app.add_option("-l", a.snapshot,
                 "read SRC as this internal snapshot: ID_OR_NAME, or "
                 "snapshot.id=ID[,snapshot.name=NAME]");
  app.add_flag("-c", a.compress, "write the data compressed (qcow2 only)");
  app.add_flag("-C", a.copy_range, "copy offloading (copy_file_range) where the formats allow");
  app.add_flag("-n", a.no_create, "do not create DST; write into the existing image");
  app.add_flag("--target-is-zero", a.target_is_zero,
               "with -n: DST reads as zeros already, so zero ranges are not written");
  app.add_option("-t", a.cache,
                 "destination cache mode: none, writeback, writethrough, directsync, unsafe "
                 "(default: unsafe, no flush at the end)");
  app.add_option("-T", a.src_cache, "source cache mode (default: writeback)");
  app.add_flag("-p", a.progress, "show progress");
  app.add_flag("-q", a.quiet, "quiet");
  app.add_flag("-W", a.unordered, "allow out-of-order writes");
  app.add_flag("-U,--force-share", a.force_share,
               "read the sources even while another process writes them");
  app.add_option("-m", a.coroutines_text, "requests in flight (1..16, default 8)");
  app.add_option("-S", a.sparse_text, "minimum run of zeros left unwritten (default 4k; 0: off)");
  app.add_option("FILES", a.files, "SRC... DST");
  app.footer(
      "Example: img convert -f raw -O qcow2 -p disk.raw disk.qcow2\n"
      "         img convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 new-top.qcow2");
}

// The checks qemu-img makes before opening anything, in its order. Empty if all is well.
std::string check_flags(const Args& a, bool explicit_sparse) {
  if (a.compress && a.copy_range) return "Cannot enable copy offloading when -c is used";
  if (explicit_sparse && a.copy_range) return "Cannot enable copy offloading when -S is used";
  if (a.no_create && !a.opt_strings.empty()) return "-o has no effect when skipping image creation";
  if (a.target_is_zero && !a.no_create) return "--target-is-zero requires use of -n flag";
  return "";
}

// Opens the target after creating it (unless -n). Returns null after printing why.
std::unique_ptr<img::BlockDriver> open_target(img::IoLoop& loop, const Args& a,
                                              const img::CacheMode& cache) {
  const std::string& path = a.files.back();
  // With -n too the target opens as -O says (raw by default), as qemu-img opens it.
  img::OpenOptions o{.format = a.out_fmt};
  cache.apply_to(o);
  auto dst = loop.run(img::open_image(loop, path, o));
  if (!dst) {
    fail(open_error(path, dst.error()));
    return nullptr;
  }
  return std::move(*dst);
}

}  // namespace

int run_convert(const std::vector<std::string>& args) {
  CLI::App app("Convert the disk image SRC (several are concatenated) into DST", "img convert");
  Args a;
  add_options(app, a);
  if (int rc = parse_args(app, args); rc >= 0) return rc;

  uint64_t min_sparse = 4096;
  const bool explicit_sparse = !a.sparse_text.empty();
  if (explicit_sparse) {
    auto s = img::parse_size(a.sparse_text);
    if (!s) {
      fail(
          "Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E "
          "suffixes for");
      return fail("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    if (*s % 512 != 0 || *s > kMaxSparse) {
      return fail(
          "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up "
          "to 16777216. Select 0 to disable sparse detection (fully allocates output).");
    }
    min_sparse = *s;
  }
  unsigned coroutines = 8;
  if (!a.coroutines_text.empty()) {
    auto m = img::parse_size(a.coroutines_text);  // qemu_strtol's syntax, without suffixes
    bool digits = a.coroutines_text.find_first_not_of("0123456789") == std::string::npos;
    if (!m || !digits || *m < 1 || *m > kMaxCoroutines) {
      return fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
    }
    coroutines = static_cast<unsigned>(*m);
  }
  if (std::string why = check_flags(a, explicit_sparse); !why.empty()) return fail(why);

  auto list = img::parse_create_options(a.out_fmt, a.opt_strings);
  if (!list) return fail(list.error().message());
  if (list->help) {
    std::fputs(img::create_options_help(a.out_fmt).c_str(), stdout);
    return kExitOk;
  }
  if (a.files.size() < 2) return fail("Must specify image file name");
  const std::string& dst_path = a.files.back();
  const size_t nsrc = a.files.size() - 1;
  std::optional<img::SnapshotSelector> snapshot;
  if (app.count("-l") > 0) {  // -l '' is a snapshot named '' (none such), as in qemu-img
    auto sel = img::parse_snapshot_param(a.snapshot);
    if (!sel) {
      fail(sel.error().message());
      return fail("Failed in parsing snapshot param '" + a.snapshot + "'");
    }
    if (nsrc > 1) return fail("No support for concatenating multiple snapshot");
    snapshot = *sel;
  }

  auto src_cache = img::parse_cache_mode(a.src_cache);
  if (!src_cache) return fail("Invalid source cache option: " + a.src_cache);
  auto cache = img::parse_cache_mode(a.cache);
  if (!cache) return fail("Invalid cache option: " + a.cache);
  if (!a.in_fmt.empty() && !known_format(a.in_fmt)) {
    return fail("Unknown file format '" + a.in_fmt + "'");
  }

  auto loop = make_loop();
  if (!loop) return kExitError;
  // Every source opens before the target is touched.
  std::vector<std::unique_ptr<img::BlockDriver>> srcs;
  std::vector<img::BlockDriver*> src_ptrs;
  uint64_t total = 0;
  for (size_t i = 0; i < nsrc; ++i) {
    img::OpenOptions o{.format = a.in_fmt, .read_only = true, .force_share = a.force_share};
    src_cache->apply_to(o);
    auto s = loop->run(img::open_image(*loop, a.files[i], o));
    if (!s) return fail(open_error(a.files[i], s.error()));
    if (snapshot) {
      if (auto st = loop->run(img::load_snapshot_tmp(**s, *snapshot)); !st) {
        return fail("Failed to load snapshot: " + st.error().message());
      }
    }
    total += ((*s)->size() + 511) / 512 * 512;  // qemu-img counts each source in sectors
    src_ptrs.push_back(s->get());
    srcs.push_back(std::move(*s));
  }

  // Target creation: its options, with -B / -F as qemu-img's old-style backing_file/backing_fmt.
  if (!a.no_create && !known_format(a.out_fmt)) {
    return fail("Unknown file format '" + a.out_fmt + "'");
  }
  if (!a.backing.empty()) list->items.emplace_back("backing_file", a.backing);
  if (!a.backing_fmt.empty()) list->items.emplace_back("backing_fmt", a.backing_fmt);
  const std::string* backing = list->find("backing_file");
  const bool target_has_backing = backing != nullptr && !backing->empty();
  if (a.target_is_zero && target_has_backing) {
    return fail("Cannot use --target-is-zero when the destination image has a backing file");
  }
  if (nsrc > 1 && target_has_backing) {
    return fail(
        "Having a backing file for the target makes no sense when concatenating multiple input "
        "images");
  }
  if (target_has_backing && !list->find("backing_fmt")) {
    return fail("Use of backing file requires explicit backing format");
  }
  if (a.compress && a.out_fmt != "qcow2") {
    return fail("Compression not supported for this file format");
  }
  if (!a.no_create) {
    auto create_opts = img::to_create_options(a.out_fmt, *list);
    if (!create_opts) return fail(dst_path + ": " + create_opts.error().message());
    if (a.compress && create_opts->preallocation != img::Preallocation::kOff) {
      return fail("Compression and preallocation not supported at the same time");
    }
    auto st = loop->run(img::create_image(*loop, dst_path, a.out_fmt, total, *create_opts));
    if (!st) {
      return fail(dst_path + ": error while converting " + a.out_fmt + ": " + reason(st.error()));
    }
  }
  std::unique_ptr<img::BlockDriver> dst = open_target(*loop, a, *cache);
  if (!dst) return kExitError;
  if (a.no_create && dst->size() < total) return fail("output file is smaller than input file");
  if (a.compress && dst->compressed_cluster_size() == 0) {
    return fail("Compression not supported for this file format");
  }

  Progress bar(a.progress && !a.quiet);
  img::ConvertOptions copts;
  copts.in_flight = coroutines;
  copts.min_sparse = min_sparse;
  // As qemu-img: a new image without a backing file reads as zeros, unless -S 0 asks for a
  // fully allocated one; with -n only --target-is-zero says so.
  copts.target_is_zero =
      a.target_is_zero || (!a.no_create && min_sparse != 0 && !target_has_backing);
  copts.compress = a.compress;
  copts.in_order = !a.unordered;
  copts.copy_range = a.copy_range;
  copts.target_has_backing = target_has_backing;
  if (target_has_backing && dst->backing()) copts.target_backing_size = dst->backing()->size();
  copts.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto stats = loop->run(img::convert(*loop, src_ptrs, *dst, copts));
  if (!stats) return fail(stats.error().message());
  auto closed = loop->run(dst->close());
  if (!closed) return fail(dst_path + ": " + reason(closed.error()));
  for (auto& s : srcs) (void)loop->run(s->close());
  bar.finish();
  return kExitOk;
}

}  // namespace imgcli
