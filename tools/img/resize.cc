// img resize [--shrink] [--preallocation=off|metadata|falloc|full] [-f fmt] [-q] FILE [+|-]SIZE:
// qemu-img 7.2's resize: same checks in the same order, same messages, exit 0 / 1.
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"

namespace imgcli {
namespace {

bool parse_prealloc(const std::string& s, img::Preallocation* out) {
  if (s == "off") {
    *out = img::Preallocation::kOff;
  } else if (s == "metadata") {
    *out = img::Preallocation::kMetadata;
  } else if (s == "falloc") {
    *out = img::Preallocation::kFalloc;
  } else if (s == "full") {
    *out = img::Preallocation::kFull;
  } else {
    return false;
  }
  return true;
}

// qemu refuses version 2 images with snapshots (they do not record each snapshot's size); the
// driver says the same, but cannot be opened read/write on images with snapshots yet, so the
// header facts are read first to give qemu's answer.
std::string v2_snapshot_refusal(img::IoLoop& loop, const std::string& path,
                                const std::string& fmt) {
  auto f = img::open_file(loop, path, {.read_only = true});
  if (!f) return "";
  auto probed = detect_format(loop, **f, fmt);
  if (!probed || *probed != "qcow2") return "";
  auto info = loop.run(img::read_qcow2_info(**f));
  if (!info || info->version >= 3 || info->nb_snapshots == 0) return "";
  return "Can't resize a v2 image which has snapshots";
}

}  // namespace

int run_resize(const std::vector<std::string>& args) {
  CLI::App app("Change the virtual size of the disk image FILE to SIZE (or by +SIZE / -SIZE)",
               "img resize");
  std::string fmt, prealloc_text;
  std::vector<std::string> files;
  bool quiet = false, shrink = false;
  app.add_option("-f", fmt, "image format (probed if not given)");
  app.add_option("--preallocation", prealloc_text,
                 "how the new space is allocated: off (default), metadata, falloc, full");
  app.add_flag("--shrink", shrink, "allow shrinking (the data past the new end is lost)");
  app.add_flag("-q", quiet, "quiet: print nothing on success");
  app.add_option("FILE", files, "the image");
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) return parse_args(app, args);
  // As qemu-img: SIZE is taken off the end before the options are parsed, so that "-1G" is a
  // size and not an option.
  if (args.size() < 2) return usage_error("Not enough arguments");
  const std::string size_text = args.back();
  std::vector<std::string> rest(args.begin(), args.end() - 1);
  if (int rc = parse_args(app, rest); rc >= 0) return rc;

  img::ResizeOptions opts;
  opts.allow_shrink = shrink;
  if (!prealloc_text.empty() && !parse_prealloc(prealloc_text, &opts.preallocation)) {
    return fail("Invalid preallocation mode '" + prealloc_text + "'");
  }
  if (files.size() != 1) return usage_error("Expecting image file name and size");
  const std::string& file = files[0];
  auto change = img::parse_size_change(size_text);
  if (!change) return fail(change.error().message());
  if (!fmt.empty() && !known_format(fmt)) {
    return fail("Could not open '" + file + "': Unknown driver '" + fmt + "'");
  }

  auto loop = make_loop();
  if (!loop) return kExitError;
  if (std::string why = v2_snapshot_refusal(*loop, file, fmt); !why.empty()) return fail(why);
  auto drv = loop->run(img::open_image(*loop, file, {.format = fmt}));
  if (!drv) return fail(open_error(file, drv.error()));
  auto target = img::resolve_size_change((*drv)->size(), *change);
  if (!target) return fail(target.error().message());
  bool refused_shrink = *target < (*drv)->size() && !shrink;
  auto st = loop->run(img::resize_image(**drv, *target, opts));
  if (!st) {
    (void)loop->run((*drv)->close());
    fail(reason(st.error()));
    if (refused_shrink && opts.preallocation == img::Preallocation::kOff) {
      std::fprintf(stderr,
                   "img: warning: Shrinking an image will delete all data beyond the shrunken "
                   "image's end. Before performing such an operation, make sure there is no "
                   "important data there.\n");
    }
    return kExitError;
  }
  if (auto c = loop->run((*drv)->close()); !c) return fail(reason(c.error()));
  if (!quiet) std::printf("Image resized.\n");
  return kExitOk;
}

}  // namespace imgcli
