// img amend [-f fmt] [-t cache] [-p] [-q] [--force] -o OPTIONS FILE: qemu-img 7.2's amend
// (qemu-img.c img_amend): the same order of checks (options given, help, the file name, the
// open, the option names, then the changes), the same messages and exit codes 0 / 1.
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "progress.h"

namespace imgcli {
namespace {

// "-o help" for a format named with -f (no image needed) or the opened image's.
int print_help(const std::string& fmt) {
  if (fmt != "qcow2") return fail("Format driver '" + fmt + "' does not support option amendment");
  std::fputs(img::amend_options_help(fmt).c_str(), stdout);
  return kExitOk;
}

}  // namespace

int run_amend(const std::vector<std::string>& args) {
  CLI::App app("Change the format-specific options of the image FILE", "img amend");
  std::string fmt, cache = "writeback";
  std::vector<std::string> option_strings, files;
  bool quiet = false, progress = false, force = false;  // --force: nothing libimg amends needs it
  app.add_option("-f", fmt, "format of FILE (probed if not given)");
  app.add_option("-t", cache, "cache mode: none, writeback (default), writethrough, ...");
  app.add_option("-o", option_strings, "options to change: key=value,... ('-o help' lists them)")
      ->allow_extra_args(false);
  app.add_flag("-p", progress, "show progress");
  app.add_flag("-q", quiet, "quiet");
  app.add_flag("--force", force, "allow unsafe operations (qemu: LUKS keyslot changes)");
  app.add_option("FILE", files, "the image");
  if (int rc = parse_args(app, args); rc >= 0) return rc;

  if (option_strings.empty()) return usage_error("Must specify options (-o)");
  if (quiet) progress = false;
  // The format's option parse is needed first only to see whether help was asked for.
  bool help = false;
  for (const std::string& s : option_strings) {
    for (const char* h : {"help", "?"}) {
      if (s == h || s.starts_with(std::string(h) + ",") || s.ends_with("," + std::string(h)) ||
          s.find("," + std::string(h) + ",") != std::string::npos) {
        help = true;
      }
    }
  }
  if (!fmt.empty() && help) return print_help(fmt);
  if (files.size() != 1) return fail("Expecting one image file name");
  const std::string& file = files[0];
  auto mode = img::parse_cache_mode(cache);
  if (!mode) return fail("Invalid cache option: " + cache);
  if (!fmt.empty() && !known_format(fmt)) {
    return fail("Could not open '" + file + "': Unknown driver '" + fmt + "'");
  }

  auto loop = make_loop();
  if (!loop) return kExitError;
  img::OpenOptions o{.format = fmt};
  mode->apply_to(o);
  auto drv = loop->run(img::open_image(*loop, file, o));
  if (!drv) return fail(open_error(file, drv.error()));
  const std::string format = (*drv)->format_name();
  auto close_and = [&](int rc) {
    auto c = loop->run((*drv)->close());
    if (!c && rc == kExitOk) return fail(reason(c.error()));
    return rc;
  };
  if (help) return close_and(print_help(format));
  if (format != "qcow2") {
    return close_and(fail("Format driver '" + format + "' does not support option amendment"));
  }
  auto list = img::parse_amend_options(format, option_strings);
  if (!list) return close_and(fail(list.error().message()));

  Progress bar(progress);
  bar.update(0, 1);
  auto st = loop->run(img::amend_image(
      **drv, list->options, [&](uint64_t done, uint64_t total) { bar.update(done, total); }));
  bar.finish();
  if (!st) return close_and(fail(reason(st.error())));
  return close_and(kExitOk);
}

}  // namespace imgcli
