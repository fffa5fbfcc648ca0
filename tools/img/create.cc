// img create [-f fmt] [-o options] [-b backing [-F backing_fmt]] [-q] FILE [SIZE]
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"

namespace imgcli {
namespace {

// The size of the backing image, for "img create -b base.qcow2 overlay.qcow2" without SIZE.
img::Result<uint64_t> backing_size(img::IoLoop& loop, const std::string& image,
                                   const std::string& backing) {
  std::filesystem::path p(backing);
  if (p.is_relative()) p = std::filesystem::path(image).parent_path() / p;
  auto f = img::open_host_file(loop, p.string(), {.read_only = true});
  if (!f) return img::Unexpected(f.error());
  auto fmt = loop.run(img::probe_format(**f));
  if (!fmt) return img::Unexpected(fmt.error());
  if (*fmt == "qcow2") {
    auto info = loop.run(img::read_qcow2_info(**f));
    if (!info) return img::Unexpected(info.error());
    return info->virtual_size;
  }
  return (*f)->size();
}

}  // namespace

int run_create(const std::vector<std::string>& args) {
  CLI::App app("Create a new disk image FILE of SIZE bytes", "img create");
  std::string fmt = "raw", file, size_text, backing, backing_fmt;
  std::vector<std::string> opt_strings;
  bool quiet = false;
  app.add_option("-f", fmt, "image format: raw (default) or qcow2");
  app.add_option("-o", opt_strings, "format options key=value,... ('-o help' lists them)")
      ->allow_extra_args(false);
  app.add_option("-b", backing, "backing file (qcow2)");
  app.add_option("-F", backing_fmt, "backing file format");
  app.add_flag("-q", quiet, "quiet: print nothing on success");
  app.add_option("FILE", file, "the image to create");
  app.add_option("SIZE", size_text, "virtual size, with optional suffix k, M, G, T, P, E");
  if (int rc = parse_args(app, args); rc >= 0) return rc;

  std::string where = file.empty() ? "" : file + ": ";
  if (!known_format(fmt)) return fail(where + "Unknown file format '" + fmt + "'");
  // -b/-F are -o backing_file/backing_fmt; a comma in a value is written ",," in -o syntax.
  auto escaped = [](std::string v) {
    for (size_t i = v.find(','); i != std::string::npos; i = v.find(',', i + 2)) v.insert(i, ",");
    return v;
  };
  if (!backing.empty()) opt_strings.push_back("backing_file=" + escaped(backing));
  if (!backing_fmt.empty()) opt_strings.push_back("backing_fmt=" + escaped(backing_fmt));
  auto list = img::parse_create_options(fmt, opt_strings);
  if (!list) return fail(where + list.error().message());
  if (list->help) {
    std::fputs(img::create_options_help(fmt).c_str(), stdout);
    return kExitOk;
  }
  if (file.empty()) return fail("Expecting image file name");

  auto loop = make_loop();
  if (!loop) return kExitError;
  uint64_t size = 0;
  bool have_size = false;
  if (const std::string* s = list->find("size")) {
    size = std::stoull(*s);
    have_size = true;
  }
  if (!size_text.empty()) {
    auto parsed = img::parse_size(size_text);
    if (!parsed) {
      if (parsed.error().message().find("too large") != std::string::npos) {
        return fail("Invalid image size specified. Must be between 0 and 9223372036854775807.");
      }
      fail("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
      return fail("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    size = *parsed;
    have_size = true;
  }
  const std::string* bf = list->find("backing_file");
  if (!have_size && bf != nullptr) {
    auto bs = backing_size(*loop, file, *bf);
    if (!bs) return fail(where + open_error(*bf, bs.error()));
    size = *bs;
    have_size = true;
  }
  if (!have_size) return fail(where + "Image creation needs a size parameter");

  if (!quiet) {
    std::printf("Formatting '%s', fmt=%s %s\n", file.c_str(), fmt.c_str(),
                img::describe_create_options(fmt, *list, size).c_str());
    std::fflush(stdout);
  }
  auto opts = img::to_create_options(fmt, *list);
  if (!opts) return fail(where + opts.error().message());
  auto st = loop->run(img::create_image(*loop, file, fmt, size, *opts));
  if (!st) return fail(where + reason(st.error()));
  return kExitOk;
}

}  // namespace imgcli
