// img convert [-f fmt] [-O fmt] [-o options] [-c] [-n] [-p] [-q] [-W] [-m N] [-S size] SRC DST:
// copies SRC into a new DST through ops::convert, leaving zero ranges unwritten; with -c every
// data cluster is written compressed (-o compression_type=zlib|zstd picks the codec).
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"

namespace imgcli {
namespace {

// qemu-img's progress line: "    (42.00/100%)\r" on stdout, at most once per percent.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    double pct = total ? static_cast<double>(done) * 100.0 / static_cast<double>(total) : 100.0;
    if (shown_ >= 0 && pct < shown_ + 1.0 && pct < 100.0) return;
    shown_ = pct;
    std::printf("    (%3.2f/100%%)\r", pct);
    std::fflush(stdout);
  }
  void finish() {
    if (!enabled_) return;
    std::printf("    (100.00/100%%)\r\n");
    std::fflush(stdout);
  }

 private:
  bool enabled_;
  double shown_ = -1;
};

}  // namespace

int run_convert(const std::vector<std::string>& args) {
  CLI::App app("Convert the disk image SRC into DST", "img convert");
  std::string in_fmt, out_fmt = "raw", sparse_text;
  std::vector<std::string> opt_strings, files;
  bool progress = false, quiet = false, unordered = false, no_create = false, compress = false;
  unsigned coroutines = 16;
  app.add_option("-f", in_fmt, "source format (probed if not given)");
  app.add_option("-O", out_fmt, "destination format: raw (default) or qcow2");
  app.add_option("-o", opt_strings, "destination format options key=value,...")
      ->allow_extra_args(false);
  app.add_flag("-c", compress, "write the data compressed (qcow2 only)");
  app.add_flag("-n", no_create, "do not create DST; write into the existing image");
  app.add_flag("-p", progress, "show progress");
  app.add_flag("-q", quiet, "quiet");
  app.add_flag("-W", unordered, "allow out-of-order writes (always on in img)");
  app.add_option("-m", coroutines, "chunks in flight (1..16, default 16)");
  app.add_option("-S", sparse_text, "minimum run of zeros left unwritten (default 4k; 0: off)");
  app.add_option("FILES", files, "SRC DST")->expected(2, 2)->required();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  (void)unordered;
  const std::string& src_path = files[0];
  const std::string& dst_path = files[1];
  if (coroutines < 1 || coroutines > 16) {
    return fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
  }
  if (!in_fmt.empty() && !known_format(in_fmt)) return fail("Unknown file format '" + in_fmt + "'");
  if (!known_format(out_fmt)) return fail("Unknown file format '" + out_fmt + "'");
  uint64_t min_sparse = 4096;
  if (!sparse_text.empty()) {
    auto s = img::parse_size(sparse_text);
    if (!s || *s % 512 != 0) {
      return fail(
          "Invalid buffer size for sparse output specified. "
          "Valid sizes are multiples of 512 up to 2 MiB");
    }
    min_sparse = *s;
  }
  auto list = img::parse_create_options(out_fmt, opt_strings);
  if (!list) return fail(list.error().message());
  if (list->help) {
    std::fputs(img::create_options_help(out_fmt).c_str(), stdout);
    return kExitOk;
  }
  auto create_opts = img::to_create_options(out_fmt, *list);
  if (!create_opts) return fail(dst_path + ": " + create_opts.error().message());

  if (compress && out_fmt != "qcow2") return fail("Compression not supported for this file format");

  auto loop = make_loop();
  if (!loop) return kExitError;
  auto src = loop->run(img::open_image(*loop, src_path, {.format = in_fmt, .read_only = true}));
  if (!src) return fail(open_error(src_path, src.error()));
  std::string src_fmt = (*src)->format_name();
  uint64_t size = (*src)->size();

  if (!no_create) {
    auto st = loop->run(img::create_image(*loop, dst_path, out_fmt, size, *create_opts));
    if (!st) return fail(dst_path + ": " + reason(st.error()));
  }
  auto dst = loop->run(img::open_image(*loop, dst_path, {.format = out_fmt}));
  if (!dst) return fail(open_error(dst_path, dst.error()));

  Progress bar(progress && !quiet);
  img::ConvertOptions copts;
  copts.in_flight = coroutines;
  copts.min_sparse = min_sparse;
  copts.target_is_zero = !no_create;
  copts.compress = compress;
  copts.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto stats = loop->run(img::convert(*loop, **src, **dst, copts));
  if (!stats) return fail("error while converting " + src_fmt + ": " + stats.error().to_string());
  auto closed = loop->run((*dst)->close());
  if (!closed) return fail(dst_path + ": " + reason(closed.error()));
  (void)loop->run((*src)->close());
  bar.finish();
  return kExitOk;
}

}  // namespace imgcli
