// img snapshot [-U] [-q] [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILE: qemu-img 7.2's
// snapshot command, same output, messages and exit codes. As in 7.2 there is no -f and no
// --output (its snapshot command has neither); -l on an image without snapshots (or a raw one)
// prints nothing; -a takes an id or else a name, -d a name only (qemu-img looks it up with
// bdrv_snapshot_find, which matches names); no action at all opens the image and does nothing.
#include "img/snapshot.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>

#include "common.h"
#include "img/image.h"

namespace imgcli {

namespace {

// The errno qemu-img would report for an error of ours ("-95 (Operation not supported)").
int errno_of(const img::Error& e) {
  if (e.sys_errno()) return e.sys_errno();
  switch (e.code()) {
    case img::ErrorCode::kNotSupported:
      return ENOTSUP;
    case img::ErrorCode::kNotFound:
      return ENOENT;
    case img::ErrorCode::kNoSpace:
      return ENOSPC;
    case img::ErrorCode::kReadOnly:
      return EACCES;
    case img::ErrorCode::kPermission:
      return EPERM;
    case img::ErrorCode::kInvalidArgument:
      return EINVAL;
    default:
      return EIO;
  }
}

}  // namespace

// bdrv_snapshot_dump (block/qapi.c, 7.2): header "%-10s%-17s%8s%20s%13s%11s", rows
// "%-9s %-16s %8s%20s%13s%11s"; the date in local time, the clock as hh:mm:ss.mmm, the
// icount empty when the entry records none.
void print_snapshot_table(const std::vector<img::SnapshotInfo>& sns) {
  std::printf("Snapshot list:\n");
  std::printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
  for (const auto& s : sns) {
    char date[128], clock[128], icount[64] = "";
    time_t t = s.date_sec;
    tm tm{};
    localtime_r(&t, &tm);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = s.vm_clock_nsec / 1000000000;
    std::snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", int(secs / 3600),
                  int((secs / 60) % 60), int(secs % 60), int((s.vm_clock_nsec / 1000000) % 1000));
    if (s.icount) std::snprintf(icount, sizeof icount, "%lld", (long long)*s.icount);
    std::printf("%-9s %-16s %8s%20s%13s%11s\n", s.id.c_str(), s.name.c_str(),
                human_size(s.vm_state_size).c_str(), date, clock, icount);
  }
}

int run_snapshot(const std::vector<std::string>& args) {
  CLI::App app("List, create, apply or delete internal snapshots of FILE", "img snapshot");
  bool list = false, quiet = false, force_share = false;
  std::string apply, create, del, file;
  app.add_flag("-l", list, "list the snapshots");
  app.add_option("-a", apply, "apply (revert the disk to) a snapshot, by id or name");
  app.add_option("-c", create, "create a snapshot with this name");
  app.add_option("-d", del, "delete the snapshot with this name");
  app.add_flag("-q", quiet, "quiet");
  app.add_flag("-U,--force-share", force_share,
               "list (-l) even while another process writes the image");
  app.add_option("FILE", file, "the image");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  (void)quiet;  // qemu-img's snapshot prints nothing on success anyway
  int actions = list + (app.count("-a") > 0) + (app.count("-c") > 0) + (app.count("-d") > 0);
  if (actions > 1) return usage_error("Cannot mix '-l', '-a', '-c', '-d'");
  if (file.empty()) return usage_error("Expecting one image file name");

  auto loop = make_loop();
  if (!loop) return kExitError;
  // As qemu-img: only -l (and no action) open read-only.
  bool writes = actions == 1 && !list;
  auto drv =
      loop->run(img::open_image(*loop, file, {.read_only = !writes, .force_share = force_share}));
  if (!drv) {
    // qemu-img names the file twice for an OS error: its open, then the file layer's.
    std::string msg = open_error(file, drv.error());
    if (drv.error().sys_errno()) msg = "Could not open '" + file + "': " + msg;
    return fail(msg);
  }
  img::BlockDriver& d = **drv;
  int rc = kExitOk;
  if (list) {
    auto sns = img::list_snapshots(d);
    if (sns && !sns->empty()) print_snapshot_table(*sns);
  } else if (app.count("-c")) {
    auto made = loop->run(img::create_snapshot(d, {.name = create}));
    if (!made) {
      int err = errno_of(made.error());
      rc = fail(img::strfmt("Could not create snapshot '%s': %d (%s)", create.c_str(), -err,
                            std::strerror(err)));
    }
  } else if (app.count("-a")) {
    auto st = loop->run(img::apply_snapshot(d, apply));
    if (!st) {
      rc = fail("Could not apply snapshot '" + apply +
                "': Failed to load snapshot: " + std::strerror(errno_of(st.error())));
    }
  } else if (app.count("-d")) {
    std::optional<img::SnapshotInfo> found;
    if (auto sns = img::list_snapshots(d)) {
      for (const auto& s : *sns) {
        if (s.name == del) {
          found = s;
          break;
        }
      }
    }
    if (!found) {
      rc = fail("Could not delete snapshot '" + del + "': snapshot not found");
    } else {
      img::SnapshotInfo target = *found;
      auto st = loop->run(img::delete_snapshot(d, target.id, target.name));
      if (!st) rc = fail("Could not delete snapshot '" + del + "': " + reason(st.error()));
    }
  }
  if (auto c = loop->run(d.close()); !c && rc == kExitOk) rc = fail(reason(c.error()));
  return rc;
}

}  // namespace imgcli
