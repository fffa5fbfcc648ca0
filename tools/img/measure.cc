// img measure [--output=human|json] [-O fmt] [-o options] (--size N | [-f fmt] FILE): the size a
// new image of format fmt needs: for N bytes of virtual size, or for FILE's data (its whole
// chain), with qemu-img 7.2's numbers (img/measure.h).
#include "img/measure.h"

#include <cinttypes>
#include <cstdio>

#include "common.h"
#include "img/qcow2.h"
#include "json.h"
#include "mapped_image.h"

namespace imgcli {

int run_measure(const std::vector<std::string>& args) {
  CLI::App app(
      "Compute the file size a new image needs, for a virtual size or a source image's data\n"
      "Example: img measure -O qcow2 -o cluster_size=2M disk.raw",
      "img measure");
  std::string in_fmt, out_fmt = "raw", output = "human", size_text;
  std::vector<std::string> opt_strings, files;
  bool force_share = false;
  app.add_option("--size", size_text, "the virtual size to measure for (instead of FILE)");
  app.add_option("-f", in_fmt, "FILE's format (probed if not given)");
  app.add_option("-O", out_fmt, "the new image's format: raw (default) or qcow2");
  app.add_option("-o", opt_strings, "the new image's options key=value,...")
      ->allow_extra_args(false);
  app.add_option("--output", output, "human (default) or json");
  app.add_flag("-U,--force-share", force_share, "read FILE even while another process writes it");
  app.add_option("FILE", files, "the source image");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  std::optional<uint64_t> size;
  if (!size_text.empty()) {
    size = cvtnum("image size", size_text);
    if (!size) return kExitError;
  }
  if (output != "human" && output != "json") {
    return fail("--output must be used with human or json as argument.");
  }
  if (files.size() > 1) return fail("At most one filename argument is allowed.");
  if (files.empty() && !in_fmt.empty()) {
    return fail("--image-opts, -f, and -l require a filename argument.");
  }
  if (!files.empty() && size) return fail("--size N cannot be used together with a filename.");
  if (files.empty() && !size) return fail("Either --size N or one filename must be specified.");
  if (!in_fmt.empty() && !known_format(in_fmt)) return fail("Unknown file format '" + in_fmt + "'");

  auto loop = make_loop();
  if (!loop) return kExitError;
  std::optional<MappedImage> source;
  bool source_bitmaps = false;
  std::vector<img::BitmapInfo> bitmaps;
  if (!files.empty()) {
    auto image = open_mapped(*loop, files[0], in_fmt, force_share);
    if (!image) return fail(image.error().message());
    source = std::move(*image);
    const img::ChainLayer& top = source->mapper->layers().front();
    if (top.format == "qcow2") {
      auto f = img::open_file(*loop, top.path, {.read_only = true});
      if (!f) return fail(open_error(top.path, f.error()));
      auto info = loop->run(img::read_qcow2_info(**f));
      if (!info) return fail(open_error(top.path, info.error()));
      // qemu's qcow2 driver supports persistent bitmaps from version 3 on.
      source_bitmaps = info->version >= 3;
      bitmaps = info->bitmaps;
    }
  }
  if (!known_format(out_fmt)) return fail("Unknown file format '" + out_fmt + "'");
  auto list = img::parse_create_options(out_fmt, opt_strings);
  if (!list) {
    fail(list.error().message());
    return fail("Invalid options for file format '" + out_fmt + "'");
  }
  if (list->help) {
    std::fputs(img::create_options_help(out_fmt).c_str(), stdout);
    return kExitOk;
  }
  auto opts = img::to_measure_options(out_fmt, *list);
  if (!opts) return fail(opts.error().message());
  if (size) opts->size = *size;  // --size wins over -o size=, as in qemu-img

  auto r = loop->run(img::measure(*opts, source ? source->mapper.get() : nullptr,
                                  source ? source->driver->size() : 0, source_bitmaps, bitmaps));
  if (!r) return fail(r.error().message());
  if (output == "json") {
    Json o = Json::object();
    if (r->has_bitmaps) o.set("bitmaps", r->bitmaps);
    o.set("required", r->required);
    o.set("fully-allocated", r->fully_allocated);
    std::printf("%s\n", o.pretty().c_str());
  } else {
    std::printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", r->required,
                r->fully_allocated);
    if (r->has_bitmaps) std::printf("bitmaps size: %" PRIu64 "\n", r->bitmaps);
  }
  return kExitOk;
}

}  // namespace imgcli
