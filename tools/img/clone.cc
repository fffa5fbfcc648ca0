// img clone [--linked|--full] [--flatten] [-f fmt] [-O fmt] [-o options] [-c] [-p] [-q] SRC DST:
// ours (qemu-img has no clone; see docs/img.md). A new image DST from SRC:
//   --full (default)  a copy through ops' convert: sparse (what reads as zeros is not written),
//                     a qcow2 copy of a qcow2 image keeps its cluster size, compression type,
//                     refcount width and compat level unless -o says otherwise. SRC's backing
//                     file, if any, stays DST's backing file (only SRC's own data is copied),
//                     unless --flatten copies the whole chain into DST.
//   --linked          a qcow2 overlay whose backing file is SRC, its format recorded: nothing
//                     is copied, DST starts out reading exactly what SRC holds.
// A backing file name in DST is relative when the file lies beside DST, else absolute, so that
// it resolves from DST's folder. DST must not exist; on any failure DST is removed again.
#include <cstdio>
#include <filesystem>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "progress.h"

namespace imgcli {
namespace {

namespace fs = std::filesystem;

struct Args {
  std::string in_fmt, out_fmt;
  std::vector<std::string> opt_strings, files;
  bool linked = false, full = false, flatten = false, compress = false, progress = false,
       quiet = false;
};

// The name DST's header records for the image at path: its file name when it lies in DST's
// folder, else its absolute path.
std::string backing_name_for(const std::string& dst, const std::string& path) {
  std::error_code ec;
  fs::path dst_dir = fs::weakly_canonical(fs::absolute(dst).parent_path(), ec);
  fs::path file = fs::weakly_canonical(fs::absolute(path), ec);
  if (!ec && file.parent_path() == dst_dir) return file.filename().string();
  return ec ? fs::absolute(path).string() : file.string();
}

// Removes DST unless disarmed: a failed clone leaves nothing behind.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(std::string path) : path_(std::move(path)) {}
  ~RemoveOnFailure() {
    if (armed_) std::remove(path_.c_str());
  }
  void disarm() { armed_ = false; }

 private:
  std::string path_;
  bool armed_ = true;
};

// SRC's qcow2 layout options, as -o items that the user's own -o items come after (and so win).
std::vector<std::pair<std::string, std::string>> source_layout(const img::Qcow2Info& i) {
  std::vector<std::pair<std::string, std::string>> items = {
      {"compat", i.version >= 3 ? "1.1" : "0.10"},
      {"cluster_size", std::to_string(i.cluster_size)},
      {"refcount_bits", std::to_string(i.refcount_bits)}};
  if (i.version >= 3) items.emplace_back("compression_type", i.compression_type);
  return items;
}

int clone(const Args& a, img::IoLoop& loop) {
  const std::string& src_path = a.files[0];
  const std::string& dst = a.files[1];
  auto src_file = img::open_host_file(loop, src_path, {.read_only = true});
  if (!src_file) return fail(open_error(src_path, src_file.error()));
  auto src_fmt = detect_format(loop, **src_file, a.in_fmt);
  if (!src_fmt) return fail(open_error(src_path, src_fmt.error()));
  std::optional<img::Qcow2Info> info;
  if (*src_fmt == "qcow2") {
    auto i = loop.run(img::read_qcow2_info(**src_file));
    if (!i) return fail(open_error(src_path, i.error()));
    info = *i;
  }
  src_file->reset();
  auto src = loop.run(img::open_image(loop, src_path, {.format = *src_fmt, .read_only = true}));
  if (!src) return fail(open_error(src_path, src.error()));

  const std::string out_fmt = a.linked ? "qcow2" : (a.out_fmt.empty() ? *src_fmt : a.out_fmt);
  std::vector<std::string> opts = a.opt_strings;
  auto user = img::parse_create_options(out_fmt, opts);
  if (!user) return fail(user.error().message());
  if (user->help) {
    std::fputs(img::create_options_help(out_fmt).c_str(), stdout);
    return kExitOk;
  }
  img::CreateOptionList list;
  if (info && out_fmt == "qcow2") list.items = source_layout(*info);
  for (auto& kv : user->items) list.items.push_back(kv);
  // The backing file DST records: SRC itself (linked), SRC's own one (a full clone that keeps
  // the chain), or none.
  std::string backing, backing_fmt;
  if (a.linked) {
    backing = backing_name_for(dst, src_path);
    backing_fmt = *src_fmt;
  } else if (!a.flatten && info && !info->backing_file.empty()) {
    if (out_fmt != "qcow2") {
      return fail("a " + out_fmt + " image cannot have a backing file; use --flatten");
    }
    backing = backing_name_for(dst, img::combine_backing_path(src_path, info->backing_file));
    backing_fmt = (*src)->backing() ? (*src)->backing()->format_name() : info->backing_format;
  }
  if (!backing.empty()) {
    list.items.emplace_back("backing_file", backing);
    list.items.emplace_back("backing_fmt", backing_fmt);
  }
  auto create_opts = img::to_create_options(out_fmt, list);
  if (!create_opts) return fail(dst + ": " + create_opts.error().message());
  if (a.compress && out_fmt != "qcow2")
    return fail("Compression not supported for this file format");

  std::error_code ec;
  if (fs::exists(fs::symlink_status(dst, ec))) {
    return fail("'" + dst + "' already exists; img clone does not overwrite an image");
  }
  RemoveOnFailure cleanup(dst);
  const uint64_t size = (*src)->size();
  auto st = loop.run(img::create_image(loop, dst, out_fmt, size, *create_opts));
  if (!st) return fail(dst + ": " + reason(st.error()));
  if (!a.linked) {
    auto out = loop.run(img::open_image(loop, dst, {.format = out_fmt, .no_flush = true}));
    if (!out) return fail(open_error(dst, out.error()));
    Progress bar(a.progress && !a.quiet);
    img::ConvertOptions c;
    c.compress = a.compress;
    c.target_has_backing = !backing.empty();
    c.target_is_zero = backing.empty();
    if ((*out)->backing()) c.target_backing_size = (*out)->backing()->size();
    c.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
    auto stats = loop.run(img::convert(loop, **src, **out, c));
    if (!stats) return fail(stats.error().message());
    auto closed = loop.run((*out)->close());
    if (!closed) return fail(dst + ": " + reason(closed.error()));
    bar.finish();
  }
  (void)loop.run((*src)->close());
  cleanup.disarm();
  if (!a.quiet) {
    std::printf("Cloned '%s' to '%s' (%s%s).\n", src_path.c_str(), dst.c_str(),
                a.linked ? "linked, backing file " : "full copy",
                a.linked ? ("'" + backing + "'").c_str() : "");
  }
  return kExitOk;
}

}  // namespace

int run_clone(const std::vector<std::string>& args) {
  CLI::App app("Make DST a new image with SRC's content: a copy (--full) or an overlay (--linked)",
               "img clone");
  Args a;
  app.add_flag("--linked", a.linked, "DST is a qcow2 overlay whose backing file is SRC");
  app.add_flag("--full", a.full, "DST is a copy of SRC (the default)");
  app.add_flag("--flatten", a.flatten, "with --full: copy SRC's backing chain into DST too");
  app.add_option("-f", a.in_fmt, "format of SRC (probed if not given)");
  app.add_option("-O", a.out_fmt, "format of DST (default: SRC's; qcow2 with --linked)");
  app.add_option("-o", a.opt_strings, "options of DST as in img create -o (cluster_size=...)")
      ->allow_extra_args(false);
  app.add_flag("-c", a.compress, "with --full: write DST's data compressed (qcow2)");
  app.add_flag("-p", a.progress, "show progress");
  app.add_flag("-q", a.quiet, "quiet");
  app.add_option("FILES", a.files, "SRC DST");
  app.footer(
      "Example: img clone --linked golden.qcow2 vm1.qcow2\n"
      "         img clone --full --flatten -O qcow2 -o compression_type=zstd -c vm1.qcow2 "
      "backup.qcow2");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (a.files.size() != 2) return fail("Expecting two file names: SRC DST");
  if (a.linked && a.full) return fail("--linked and --full exclude each other");
  if (a.linked && (a.compress || a.flatten)) {
    return fail(std::string(a.compress ? "-c" : "--flatten") + " needs a full clone, not --linked");
  }
  if (a.linked && !a.out_fmt.empty() && a.out_fmt != "qcow2") {
    return fail("a linked clone is a qcow2 overlay; -O " + a.out_fmt +
                " cannot have a backing file");
  }
  if (!a.in_fmt.empty() && !known_format(a.in_fmt))
    return fail("Unknown file format '" + a.in_fmt + "'");
  if (!a.out_fmt.empty() && !known_format(a.out_fmt)) {
    return fail("Unknown file format '" + a.out_fmt + "'");
  }
  auto loop = make_loop();
  if (!loop) return kExitError;
  return clone(a, *loop);
}

}  // namespace imgcli
