// img bitmap (--add | --remove | --clear | --enable | --disable)... [-g GRANULARITY] [-f FMT]
// FILE BITMAP: qemu-img 7.2's bitmap subcommand (qemu-img.c img_bitmap) on the persistent dirty
// bitmaps of a qcow2 image. The operations run in the order given, each committed on its own, so
// a failing one leaves those before it done, as qemu-img leaves them; the messages and exit codes
// are qemu-img's. --merge (copying another bitmap's bits in) is not supported yet.
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/qcow2.h"

namespace imgcli {

int run_bitmap(const std::vector<std::string>& args) {
  CLI::App app(
      "Change the persistent dirty bitmap BITMAP of the qcow2 image FILE\n\n"
      "Example: img bitmap --add -g 64k disk.qcow2 backup-1",
      "img bitmap");
  std::string fmt, granularity, merge, source, source_fmt;
  std::vector<std::string> files;
  bool add = false, remove = false, clear = false, enable = false, disable = false;
  app.add_flag("--add", add, "create BITMAP, empty and enabled");
  app.add_flag("--remove", remove, "delete BITMAP and free its clusters");
  app.add_flag("--clear", clear, "empty BITMAP");
  app.add_flag("--enable", enable, "make BITMAP record writes (its auto flag)");
  app.add_flag("--disable", disable, "stop BITMAP recording writes");
  app.add_option("--merge", merge, "merge SOURCE into BITMAP (not supported yet)");
  app.add_option("-g", granularity, "bytes per bit of a new bitmap (default: the cluster size)");
  app.add_option("-b", source, "the image holding --merge's SOURCE");
  app.add_option("-F", source_fmt, "format of -b's image");
  app.add_option("-f", fmt, "format of FILE (probed if not given)");
  app.add_option("FILE BITMAP", files, "the image and the bitmap's name");
  if (int rc = parse_args(app, args); rc >= 0) return rc;

  // The operations in the order given (CLI11 keeps only whether each was seen).
  std::vector<std::pair<std::string, img::BitmapEdit::Op>> ops;
  for (const std::string& a : args) {
    if (a == "--add") ops.push_back({"add", img::BitmapEdit::Op::kAdd});
    if (a == "--remove") ops.push_back({"remove", img::BitmapEdit::Op::kRemove});
    if (a == "--clear") ops.push_back({"clear", img::BitmapEdit::Op::kClear});
    if (a == "--enable") ops.push_back({"enable", img::BitmapEdit::Op::kEnable});
    if (a == "--disable") ops.push_back({"disable", img::BitmapEdit::Op::kDisable});
  }
  if (ops.empty() && merge.empty()) {
    return fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
  }
  if (!granularity.empty() && !add) return fail("granularity only supported with --add");
  if ((!source.empty() || !source_fmt.empty()) && merge.empty()) {
    return fail("Merge bitmap source file only supported with --merge");
  }
  if (files.size() != 2) return fail("Expecting filename and bitmap name");
  if (!merge.empty()) return fail("--merge is not supported yet");
  uint64_t gran = 0;
  if (!granularity.empty()) {
    auto g = cvtnum("granularity", granularity, 0, UINT64_MAX);
    if (!g) return kExitError;
    gran = *g;
  }
  if (!fmt.empty() && !known_format(fmt)) {
    return fail("Could not open '" + files[0] + "': Unknown driver '" + fmt + "'");
  }
  const std::string& file = files[0];
  const std::string& name = files[1];

  auto loop = make_loop();
  if (!loop) return kExitError;
  auto drv = loop->run(img::open_image(*loop, file, {.format = fmt}));
  if (!drv) return fail(open_error(file, drv.error()));
  int rc = kExitOk;
  for (const auto& [word, op] : ops) {
    auto st = loop->run(img::edit_bitmap(**drv, name, {.op = op, .granularity = gran}));
    if (!st) {
      rc = fail("Operation " + word + " on bitmap " + name + " failed: " + reason(st.error()));
      break;
    }
  }
  if (auto c = loop->run((*drv)->close()); !c && rc == kExitOk) rc = fail(reason(c.error()));
  return rc;
}

}  // namespace imgcli
