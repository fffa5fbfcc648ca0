// img rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] -b BACKING [-F backing_fmt] FILE:
// qemu-img 7.2's rebase. Safe mode (the default) keeps what the guest sees: every range FILE
// does not hold itself is compared between the old backing chain and BACKING, and where they
// differ the old content is copied into FILE (ops' rebase_copy); then the header names BACKING.
// -u (unsafe) only rewrites the header, so the old chain need not exist. -b "" removes the
// backing file (safe mode first copies everything the old chain held: a flatten). A relative
// BACKING is relative to FILE's folder, as qemu-img resolves it, and is recorded as given.
//
// Intended difference: qemu-img 7.2 refuses a -b without -F only after the copy, when it changes
// the header ("backing format must be specified"), leaving FILE with the copied data and the old
// backing file; img refuses it before touching anything, in the same words.
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "progress.h"

namespace imgcli {
namespace {

struct Args {
  std::string fmt, backing_fmt, cache = "writeback", src_cache = "writeback";
  std::optional<std::string> backing;
  std::vector<std::string> files;
  bool unsafe = false, progress = false, quiet = false, force_share = false;
};

// -u: the header alone, on the file (the old chain need not open).
int rebase_unsafe(const Args& a, const std::string& file, const std::string& backing) {
  auto loop = make_loop();
  if (!loop) return kExitError;
  auto f = img::open_host_file(*loop, file, {});
  if (!f) return fail(open_error(file, f.error()));
  auto fmt = detect_format(*loop, **f, a.fmt);
  if (!fmt) return fail(open_error(file, fmt.error()));
  // qemu-img rebase -u opens the image read-write like any writer: the lock keeps it off an
  // image a VM runs on.
  if (auto locked = img::lock_image_file(**f, *fmt, false, false); !locked) {
    return fail(open_error(file, locked.error()));
  }
  if (*fmt != "qcow2") {
    return fail("Could not change the backing file to '" + backing + "': Operation not supported");
  }
  auto st = loop->run(img::write_qcow2_backing_file(**f, backing, a.backing_fmt));
  if (!st)
    return fail("Could not change the backing file to '" + backing + "': " + reason(st.error()));
  return kExitOk;
}

int rebase_safe(const Args& a, const std::string& file, const std::string& backing,
                const img::CacheMode& cache, const img::CacheMode& src_cache) {
  auto loop = make_loop();
  if (!loop) return kExitError;
  img::OpenOptions o{.format = a.fmt};
  cache.apply_to(o);
  auto top = loop->run(img::open_image(*loop, file, o));
  if (!top) return fail(open_error(file, top.error()));
  std::unique_ptr<img::BlockDriver> new_backing;
  if (!backing.empty()) {
    std::string path = img::combine_backing_path(file, backing);
    img::OpenOptions bo{.format = a.backing_fmt, .read_only = true, .force_share = a.force_share};
    src_cache.apply_to(bo);
    auto b = loop->run(img::open_image(*loop, path, bo));
    if (!b) {
      (void)loop->run((*top)->close());
      return fail("Could not open new backing file '" + backing +
                  "': " + open_error(path, b.error()));
    }
    new_backing = std::move(*b);
  }
  Progress bar(a.progress && !a.quiet);
  bar.update(0, 1);
  auto copied =
      loop->run(img::rebase_copy(*loop, **top, new_backing.get(),
                                 [&](uint64_t done, uint64_t total) { bar.update(done, total); }));
  if (!copied) {
    (void)loop->run((*top)->close());
    return fail("Error while rebasing '" + file + "': " + reason(copied.error()));
  }
  auto st = loop->run((*top)->set_backing_file(backing, a.backing_fmt));
  if (!st) {
    (void)loop->run((*top)->close());
    return fail("Could not change the backing file to '" + backing + "': " + reason(st.error()));
  }
  if (new_backing) (void)loop->run(new_backing->close());
  auto closed = loop->run((*top)->close());
  if (!closed) return fail(file + ": " + reason(closed.error()));
  bar.finish();
  return kExitOk;
}

}  // namespace

int run_rebase(const std::vector<std::string>& args) {
  CLI::App app("Change the backing file of FILE to BACKING, keeping its content (unless -u)",
               "img rebase");
  Args a;
  app.add_option("-f", a.fmt, "format of FILE (probed if not given)");
  app.add_option("-b", a.backing, "the new backing file (\"\": none, which flattens FILE)");
  app.add_option("-F", a.backing_fmt, "format of the new backing file");
  app.add_flag("-u", a.unsafe, "unsafe: only rewrite the header, copy nothing");
  app.add_option("-t", a.cache, "cache mode of FILE (default writeback)");
  app.add_option("-T", a.src_cache, "cache mode of the backing files (default writeback)");
  app.add_flag("-U,--force-share", a.force_share,
               "read the new backing file even while another process writes it");
  app.add_flag("-p", a.progress, "show progress");
  app.add_flag("-q", a.quiet, "quiet");
  app.add_option("FILE", a.files, "the image to rebase");
  app.footer(
      "Example: img rebase -b new-base.qcow2 -F qcow2 overlay.qcow2\n"
      "         img rebase -b \"\" overlay.qcow2            (flatten: no backing file)\n"
      "         img rebase -u -b moved/base.qcow2 -F qcow2 overlay.qcow2");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (a.files.size() != 1) return usage_error("Expecting one image file name");
  if (!a.backing) return usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
  const std::string& file = a.files[0];
  const std::string& backing = *a.backing;
  auto cache = img::parse_cache_mode(a.cache);
  if (!cache) return fail("Invalid cache option: " + a.cache);
  auto src_cache = img::parse_cache_mode(a.src_cache);
  if (!src_cache) return fail("Invalid source cache option: " + a.src_cache);
  if (!a.fmt.empty() && !known_format(a.fmt)) {
    return fail("Could not open '" + file + "': Unknown driver '" + a.fmt + "'");
  }
  if (!backing.empty() && a.backing_fmt.empty()) {
    return fail("Could not change the backing file to '" + backing +
                "': backing format must be specified");
  }
  if (!a.backing_fmt.empty() && !known_format(a.backing_fmt)) {
    return fail("Unknown backing file format '" + a.backing_fmt + "'");
  }
  if (a.unsafe) return rebase_unsafe(a, file, backing);
  return rebase_safe(a, file, backing, *cache, *src_cache);
}

}  // namespace imgcli
