// img map [-f fmt] [--output=human|json] [--start-offset=OFF] [--max-length=LEN] [-U] FILE:
// where the image's data lies, run by run through its backing chain, printed as qemu-img 7.2's
// map prints it (its merging of runs included).
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include "common.h"
#include "mapped_image.h"

namespace imgcli {
namespace {

// qemu-img's MapEntry.
struct Entry {
  uint64_t start = 0, length = 0, offset = 0;
  unsigned depth = 0;
  bool data = false, zero = false, present = false, has_offset = false;
  const std::string* file = nullptr;  // the file holding the run (with has_offset)
};

// The File column's name for a layer (an NBD export as qemu prints it), kept for the run.
const std::string* shown(const img::ChainLayer* layer) {
  static std::map<const img::ChainLayer*, std::string> names;
  auto [it, fresh] = names.try_emplace(layer);
  if (fresh) it->second = img::shown_file_name(layer->data_path);
  return &it->second;
}

Entry to_entry(uint64_t start, const img::ChainStatus& st) {
  return Entry{.start = start,
               .length = st.length,
               .offset = st.offset,
               .depth = st.depth,
               .data = st.data,
               .zero = st.zero,
               .present = st.allocated,
               .has_offset = st.offset_valid,
               .file = st.offset_valid ? shown(st.layer) : nullptr};
}

// Two runs print as one when nothing but their extent differs and the second continues the
// first in the same file.
bool mergeable(const Entry& a, const Entry& b) {
  if (a.length == 0) return false;
  if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present ||
      !a.file != !b.file || a.has_offset != b.has_offset) {
    return false;
  }
  if (a.file && *a.file != *b.file) return false;
  return !a.has_offset || a.offset + a.length == b.offset;
}

// Prints e; false (with the error printed) where human output cannot show it. In human form the
// next run's zero/unallocated distinction is dropped first, so such runs merge (as qemu-img).
bool dump(bool json, const Entry& e, Entry* next) {
  if (!json) {
    if (e.data && !e.has_offset) {
      fail("File contains external, encrypted or compressed clusters.");
      return false;
    }
    if (e.data && !e.zero) {
      // %#-16x prints 0 as "0", like qemu-img's printf.
      std::printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e.start, e.length,
                  e.has_offset ? e.offset : 0, e.file ? e.file->c_str() : "");
    }
    if (next && (!next->data || next->zero)) {
      next->data = false;
      next->zero = true;
    }
    return true;
  }
  std::printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
              ", \"depth\": %u, \"present\": %s, "
              "\"zero\": %s, \"data\": %s",
              e.start, e.length, e.depth, e.present ? "true" : "false", e.zero ? "true" : "false",
              e.data ? "true" : "false");
  if (e.has_offset) std::printf(", \"offset\": %" PRIu64, e.offset);
  std::putchar('}');
  if (next) std::puts(",");
  return true;
}

}  // namespace

int run_map(const std::vector<std::string>& args) {
  CLI::App app(
      "Show where the data of an image lies, run by run through its backing chain\n"
      "Example: img map --output=json disk.qcow2",
      "img map");
  std::string fmt, output = "human", start_text, length_text;
  std::vector<std::string> files;
  bool force_share = false;
  app.add_option("-f,--format", fmt, "image format (probed if not given)");
  app.add_option("--output", output, "human (default) or json");
  app.add_option("--start-offset", start_text, "first byte to map (default 0)");
  app.add_option("--max-length", length_text, "bytes to map at most (default: to the end)");
  app.add_flag("-U,--force-share", force_share,
               "read the image even while another process writes it");
  app.add_option("FILE", files, "the image");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  uint64_t start = 0, max_length = INT64_MAX;
  if (!start_text.empty()) {
    auto v = cvtnum("start offset", start_text);
    if (!v) return kExitError;
    start = *v;
  }
  if (!length_text.empty()) {
    auto v = cvtnum("max length", length_text);
    if (!v) return kExitError;
    max_length = *v;
  }
  if (files.size() != 1) {
    fail("Expecting one image file name");
    std::fprintf(stderr, "Try '%s --help' for more information\n", program_name().c_str());
    return kExitError;
  }
  if (output != "human" && output != "json") {
    return fail("--output must be used with human or json as argument.");
  }
  if (!fmt.empty() && !known_format(fmt)) return fail("Unknown file format '" + fmt + "'");
  const bool json = output == "json";

  auto loop = make_loop();
  if (!loop) return kExitError;
  auto image = open_mapped(*loop, files[0], fmt, force_share);
  if (!image) return fail(image.error().message());
  img::ChainMapper& mapper = *image->mapper;

  if (json) {
    std::putchar('[');
  } else {
    std::printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
  }
  // qemu-img computes start + max_length in int64_t; both are at most INT64_MAX here.
  uint64_t end = std::min(start + max_length, mapper.size());
  Entry curr{.start = start};
  while (curr.start + curr.length < end) {
    uint64_t off = curr.start + curr.length;
    auto st = loop->run(mapper.status(off, end - off));
    if (!st) return fail("Could not read file metadata: " + reason(st.error()));
    Entry next = to_entry(off, *st);
    if (mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0 && !dump(json, curr, &next)) return kExitError;
    curr = next;
  }
  if (!dump(json, curr, nullptr)) return kExitError;
  if (json) std::puts("]");
  return kExitOk;
}

}  // namespace imgcli
