// img-nbd: serves one image over NBD, taking qemu-nbd 7.2's flags with their meanings (see
// docs/img-nbd.md). This file parses the flags and opens the image; server.cc listens and
// accepts; libimg/src/nbd speaks the protocol.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "img/block_map.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"
#include "img/snapshot.h"
#include "server.h"

namespace {

int fail(const std::string& msg) {
  std::fprintf(stderr, "img-nbd: %s\n", msg.c_str());
  return 1;
}

std::string reason(const img::Error& e) {
  return e.sys_errno() ? std::strerror(e.sys_errno()) : e.message();
}

struct Flags {
  std::string file, format, export_name, description, bind = "0.0.0.0", port = "10809";
  std::string socket, cache = "writeback", aio = "threads", discard = "ignore";
  std::string detect_zeroes = "off", pid_file;
  bool read_only = false, persistent = false, allocation_depth = false, fork = false;
  bool snapshot = false, nocache = false, verbose = false;
  int shared = 1;
  int handshake_limit = 10;
  std::optional<img::SnapshotSelector> load_snapshot;  // -l
};

// The opened export: its drivers and the chain description the block status walks.
struct Opened {
  std::unique_ptr<img::BlockDriver> driver;
  std::unique_ptr<img::ChainMapper> mapper;
};

// -s: a temporary qcow2 overlay over the image takes the writes (qemu-nbd's --snapshot); it is
// unlinked as soon as it is open, so nothing is left behind however the server ends.
img::Result<std::string> make_snapshot_overlay(img::IoLoop& loop, const Flags& f) {
  auto base = loop.run(img::open_image(loop, f.file, {.format = f.format, .read_only = true}));
  if (!base) return img::Unexpected(std::move(base).error());
  img::Qcow2CreateOptions o;
  o.size = (*base)->size();
  char real[PATH_MAX];
  if (!::realpath(f.file.c_str(), real)) return img::io_error(errno, f.file);
  o.backing_file = real;
  o.backing_format = (*base)->format_name();
  (void)loop.run((*base)->close());
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp && *tmp ? tmp : "/var/tmp") + "/img-nbd-snapshot-XXXXXX";
  int fd = ::mkstemp(path.data());
  if (fd < 0) return img::io_error(errno, "creating the snapshot overlay in " + path);
  ::close(fd);
  auto st = loop.run(img::create_image(loop, path, "qcow2", o.size, o));
  if (!st) {
    ::unlink(path.c_str());
    return img::Unexpected(std::move(st).error());
  }
  return path;
}

img::Result<Opened> open_export(img::IoLoop& loop, const Flags& f) {
  std::string path = f.file, format = f.format;
  bool temp = false;
  if (f.snapshot) {
    auto p = make_snapshot_overlay(loop, f);
    if (!p) return img::Unexpected(std::move(p).error());
    path = *p;
    format = "qcow2";
    temp = true;
  }
  img::OpenOptions o{.format = format, .read_only = f.read_only};
  auto mode = img::parse_cache_mode(f.nocache ? "none" : f.cache);
  if (!mode) return img::Unexpected(std::move(mode).error());
  mode->apply_to(o);
  auto drv = loop.run(img::open_image(loop, path, o));
  if (drv && f.load_snapshot) {
    if (auto st = loop.run(img::load_snapshot_tmp(**drv, *f.load_snapshot)); !st) {
      if (temp) ::unlink(path.c_str());
      return img::Unexpected(
          img::Error(st.error().code(), "Failed to load snapshot: " + st.error().message()));
    }
  }
  auto layers = drv ? loop.run(img::describe_chain(loop, path, format))
                    : img::Result<std::vector<img::ChainLayer>>(img::Unexpected(drv.error()));
  if (temp) ::unlink(path.c_str());
  if (!drv) return img::Unexpected(std::move(drv).error());
  if (!layers) return img::Unexpected(std::move(layers).error());
  auto mapper = img::ChainMapper::create(**drv, std::move(*layers));
  if (!mapper) return img::Unexpected(std::move(mapper).error());
  return Opened{std::move(*drv), std::move(*mapper)};
}

// --fork: the parent waits until the child listens (a byte on the pipe) and exits with 0, or
// with 1 if the child failed first (the pipe closes empty), as qemu-nbd's parent does.
int fork_and_wait(int* ready_fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return fail(std::string("pipe: ") + std::strerror(errno));
  pid_t pid = ::fork();
  if (pid < 0) return fail(std::string("fork: ") + std::strerror(errno));
  if (pid > 0) {
    ::close(p[1]);
    char c;
    ssize_t n;
    do n = ::read(p[0], &c, 1);
    while (n < 0 && errno == EINTR);
    std::_Exit(n == 1 ? 0 : 1);
  }
  ::close(p[0]);
  ::setsid();
  *ready_fd = p[1];
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"img-nbd: serve a disk image over NBD (qemu-nbd compatible)", "img-nbd"};
  app.add_option("FILE", f.file, "the image to export")->required();
  app.add_option("-f,--format", f.format, "image format (raw, qcow2); probed if omitted");
  app.add_flag("-r,--read-only", f.read_only, "export read-only");
  app.add_option("-x,--export-name", f.export_name, "the export's name (default: empty)");
  app.add_option("-D,--description", f.description, "a description of the export");
  app.add_option("-p,--port", f.port, "TCP port to listen on (default 10809)");
  app.add_option("-b,--bind", f.bind, "address to bind to (default 0.0.0.0)");
  app.add_option("-k,--socket", f.socket, "listen on this unix socket instead of TCP");
  app.add_flag("-t,--persistent", f.persistent, "don't exit when the last client leaves");
  app.add_option("-e,--shared", f.shared, "clients served at once (default 1, 0: no limit)");
  app.add_option("--cache", f.cache, "none, writeback (default), writethrough, directsync, unsafe");
  app.add_flag("-n,--nocache", f.nocache, "the same as --cache=none");
  app.add_option("--aio", f.aio, "native, io_uring or threads (all run on io_uring here)");
  app.add_option("--discard", f.discard, "ignore (default) or unmap");
  app.add_option("--detect-zeroes", f.detect_zeroes, "off (default), on, unmap");
  app.add_flag("-A,--allocation-depth", f.allocation_depth, "offer qemu:allocation-depth");
  app.add_flag("-s,--snapshot", f.snapshot, "write to a temporary overlay, not FILE");
  std::string snapshot_param;
  app.add_option("-l,--load-snapshot", snapshot_param,
                 "export this internal snapshot, read-only: ID_OR_NAME, or "
                 "snapshot.id=ID[,snapshot.name=NAME]");
  app.add_option("--pid-file", f.pid_file, "write the server's process id here");
  app.add_flag("--fork", f.fork, "return once the server is listening, serving in the background");
  app.add_flag("-v,--verbose", f.verbose, "log clients connecting and leaving");
  app.add_option("--handshake-limit", f.handshake_limit,
                 "seconds a client has to finish the handshake (default 10, 0: no limit)");
  app.set_version_flag("-V,--version", "img-nbd 0.1 (libimg; qemu-nbd 7.2 compatible)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  }
  if (f.discard != "ignore" && f.discard != "unmap" && f.discard != "off" && f.discard != "on") {
    return fail("Invalid discard mode `" + f.discard + "'");
  }
  bool unmap = f.discard == "unmap" || f.discard == "on";
  img::nbd::DetectZeroes dz;
  if (f.detect_zeroes == "off") {
    dz = img::nbd::DetectZeroes::kOff;
  } else if (f.detect_zeroes == "on") {
    dz = img::nbd::DetectZeroes::kOn;
  } else if (f.detect_zeroes == "unmap") {
    dz = img::nbd::DetectZeroes::kUnmap;
  } else {
    return fail("Failed to parse detect_zeroes mode: invalid parameter value: " + f.detect_zeroes);
  }
  if (dz == img::nbd::DetectZeroes::kUnmap && !unmap) {
    return fail("setting detect-zeroes to unmap is not allowed without setting discard "
                "operation to unmap");
  }
  if (f.aio != "threads" && f.aio != "native" && f.aio != "io_uring") {
    return fail("Invalid aio mode '" + f.aio + "'");
  }
  if (!img::parse_cache_mode(f.cache)) return fail("Invalid cache mode `" + f.cache + "'");
  if (f.shared < 0) return fail("Invalid shared device number '" + std::to_string(f.shared) + "'");
  if (f.handshake_limit < 0) {
    return fail("Invalid handshake limit '" + std::to_string(f.handshake_limit) + "'");
  }
  if (app.count("-l") > 0) {
    auto sel = img::parse_snapshot_param(snapshot_param);
    if (!sel) {
      fail(sel.error().message());
      return fail("Failed in parsing snapshot param `" + snapshot_param + "'");
    }
    f.load_snapshot = *sel;
    f.read_only = true;  // as qemu-nbd: a loaded snapshot is exported read-only
  }
  if (f.snapshot && f.read_only && !f.load_snapshot) f.snapshot = false;  // nothing to write

  int ready_fd = -1;
  if (f.fork) {
    int rc = fork_and_wait(&ready_fd);
    if (rc >= 0) return rc;
  }
  auto loop_r = img::IoLoop::create();
  if (!loop_r) return fail(loop_r.error().to_string());
  img::IoLoop& loop = **loop_r;
  auto opened = open_export(loop, f);
  if (!opened) {
    const std::string& m = opened.error().message();
    if (m.starts_with("Failed to load snapshot: ")) return fail(m);  // qemu-nbd's words
    return fail("Could not open '" + f.file + "': " + reason(opened.error()));
  }
  img::BlockDriver& drv = *opened->driver;
  img::ChainMapper* mapper = opened->mapper.get();
  img::nbd::ExportConfig exp;
  exp.name = f.export_name;
  exp.description = f.description;
  exp.driver = &drv;
  exp.status = [mapper](uint64_t off, uint64_t len) { return mapper->status(off, len); };
  exp.read_only = f.read_only || drv.read_only();
  exp.allocation_depth = f.allocation_depth;
  exp.discard_unmap = unmap;
  exp.detect_zeroes = dz;
  exp.multi_conn = f.shared != 1;

  imgnbd::ListenSpec spec{f.socket, f.bind, f.port};
  auto lfd = imgnbd::listen_on(spec);
  if (!lfd) return fail(lfd.error().message() + ": " + reason(lfd.error()));
  if (!f.pid_file.empty()) {
    FILE* pf = std::fopen(f.pid_file.c_str(), "w");
    if (!pf) return fail("Failed to write pid file '" + f.pid_file + "': " + std::strerror(errno));
    std::fprintf(pf, "%d\n", static_cast<int>(::getpid()));
    std::fclose(pf);
  }
  imgnbd::ServerOptions so;
  so.shared = static_cast<unsigned>(f.shared);
  so.persistent = f.persistent;
  so.verbose = f.verbose;
  so.handshake_s = static_cast<unsigned>(f.handshake_limit);
  imgnbd::Server server(loop, *lfd, exp, so);
  if (auto st = server.install_signals(); !st) return fail(st.error().to_string());
  if (ready_fd >= 0) {
    char c = 1;
    ssize_t n = ::write(ready_fd, &c, 1);
    (void)n;
    ::close(ready_fd);
  }
  loop.run(server.run());
  loop.drain();
  int rc = 0;
  if (auto st = loop.run(drv.close()); !st) rc = fail("closing the image: " + st.error().to_string());
  if (!f.socket.empty()) ::unlink(f.socket.c_str());
  if (!f.pid_file.empty()) ::unlink(f.pid_file.c_str());
  return rc;
}
