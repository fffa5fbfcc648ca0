// img create [-f fmt] [-o options] [-b backing [-F backing_fmt]] [-u] [-q] FILE [SIZE]
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"

namespace imgcli {
namespace {

// What `img create -b` learns from the backing image before writing the overlay: its size (the
// overlay's size when none is given) and, when no -F was given, the format qemu-img would name.
struct BackingFacts {
  uint64_t size = 0;
  std::string format;
};

// Opens the backing image alone (its own backing file is not needed) as qemu-img create does;
// the error is qemu-img's two lines.
img::Result<BackingFacts> probe_backing(img::IoLoop& loop, const std::string& image,
                                        const std::string& backing, const std::string& fmt) {
  std::string path = img::combine_backing_path(image, backing);
  auto d = loop.run(img::open_image(
      loop, path, {.format = fmt, .read_only = true, .backing = img::BackingPolicy::kIgnore}));
  if (!d) {
    std::string why = d.error().code() == img::ErrorCode::kCorruption && !fmt.empty()
                          ? "Image is not in " + fmt + " format"
                          : open_error(path, d.error());
    return img::Unexpected(img::Error(d.error().code(), why + "\nCould not open backing image."));
  }
  // QEMU counts a raw file's length in whole 512-byte sectors.
  uint64_t size = (*d)->size();
  if (std::string((*d)->format_name()) == "raw") size = (size + 511) / 512 * 512;
  BackingFacts f{size, (*d)->format_name()};
  (void)loop.run((*d)->close());
  return f;
}

}  // namespace

int run_create(const std::vector<std::string>& args) {
  CLI::App app("Create a new disk image FILE of SIZE bytes", "img create");
  std::string fmt = "raw", file, size_text, backing, backing_fmt;
  std::vector<std::string> opt_strings;
  bool quiet = false, unsafe = false;
  app.add_option("-f", fmt, "image format: raw (default) or qcow2");
  app.add_option("-o", opt_strings, "format options key=value,... ('-o help' lists them)")
      ->allow_extra_args(false);
  app.add_option("-b", backing, "backing file (qcow2)");
  app.add_option("-F", backing_fmt, "backing file format");
  app.add_flag("-u", unsafe, "unsafe: do not open the backing file (SIZE is then required)");
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
  if (!backing.empty() && fmt == "raw") {
    return fail(where + "Backing file not supported for file format 'raw'");
  }
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
  if (bf != nullptr) {
    const std::string* bfmt = list->find("backing_fmt");
    if (*bf == file) {
      return fail(where +
                  "Error: Trying to create an image with the same filename as the "
                  "backing file");
    }
    std::string detected;
    if (!unsafe) {
      auto facts = probe_backing(*loop, file, *bf, bfmt ? *bfmt : "");
      if (!facts) return fail(where + facts.error().message());
      if (!have_size) {
        size = facts->size;
        have_size = true;
      }
      detected = facts->format;
    }
    // As qemu-img 7.2: a backing file's format is never left to be probed at every open.
    if (bfmt == nullptr) {
      std::string msg = where + "Backing file specified without backing format";
      if (detected.empty()) return fail(msg);
      // qemu-img prints its hint with no newline after it; so do we, byte for byte.
      std::fflush(stdout);
      std::fprintf(stderr, "img: %s\nDetected format of %s.", msg.c_str(), detected.c_str());
      return kExitError;
    }
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
