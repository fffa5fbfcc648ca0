// Opening an image with its backing chain (qcow2.rst "Header": backing_file_offset; the backing
// format extension). Each image's backing file is found relative to that image's folder, opened
// read-only through the OpenOptions' FileOpener, and handed to the image's driver. A chain that
// loops, runs deeper than max_chain_depth, or names a file that does not open is refused with
// an error that shows the chain.
#include <string>
#include <vector>

#include "img/image.h"
#include "qcow2/open.h"

namespace img {
namespace {

struct ChainOpen {
  IoLoop& loop;
  const OpenOptions& opts;
  const FileOpener& opener;
  std::vector<std::string> names;       // the chain so far, top first
  std::vector<std::string> identities;  // the files behind those names
};

std::string chain_text(const std::vector<std::string>& names, const std::string& next) {
  std::string s;
  for (const auto& n : names) s += n + " -> ";
  return s + next;
}
std::string chain_text(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : " -> ") + n;
  return s;
}

// The driver for one image of the chain, without its backing file.
Task<Result<std::unique_ptr<BlockDriver>>> open_driver(ChainOpen& c, std::unique_ptr<File> file,
                                                       std::string fmt, bool read_only) {
  if (fmt.empty()) {
    CO_ASSIGN_OR_RETURN(fmt, co_await probe_format(*file));
  }
  // Before the driver reads (or, read-write, repairs) anything, as QEMU applies its
  // permissions when it attaches the file, before the format driver opens.
  if (fmt == "raw" || fmt == "qcow2") {
    CO_RETURN_IF_ERROR(lock_image_file(*file, fmt, read_only, c.opts.force_share));
  }
  if (fmt == "raw") co_return make_raw_driver(std::move(file));
  if (fmt == "qcow2") {
    OpenOptions o = c.opts;
    o.read_only = read_only;
    co_return co_await qcow2::open_qcow2(c.loop, std::move(file), o);
  }
  co_return invalid_argument("unknown image format '" + fmt + "' (raw and qcow2 are supported)");
}

Task<Result<std::unique_ptr<BlockDriver>>> open_layer(ChainOpen& c, std::unique_ptr<File> file,
                                                      std::string fmt, bool read_only) {
  std::string name = file->name();
  auto opened = co_await open_driver(c, std::move(file), std::move(fmt), read_only);
  if (!opened) {
    // The caller names the top image; a backing file's error says which one it is (each
    // layer names only itself, so the error names the file at fault once).
    Error e = std::move(opened).error();
    if (c.names.size() > 1) {
      e.prepend("backing file '" + name + "' (chain: " + chain_text(c.names) + ")");
    }
    co_return Unexpected(std::move(e));
  }
  std::unique_ptr<BlockDriver> drv = std::move(*opened);
  std::optional<qcow2::BackingRef> ref = qcow2::backing_reference(*drv);
  if (!ref || c.opts.backing == BackingPolicy::kIgnore) co_return drv;

  std::string path = combine_backing_path(name, ref->name);
  if (c.names.size() > c.opts.max_chain_depth) {  // names holds the top image too
    co_return invalid_argument(strfmt("backing chain is deeper than %u images: %s",
                                      c.opts.max_chain_depth, chain_text(c.names, path).c_str()));
  }
  std::string id = c.opener.identity(path);
  for (const auto& seen : c.identities) {
    if (seen == id) {
      co_return invalid_argument("backing chain has a loop: " + chain_text(c.names, path));
    }
  }
  // A backing file is never written; one whose format the overlay does not record is probed,
  // as QEMU does, and so is only ever read.
  auto bfile = c.opener.open(c.loop, path, {.read_only = true, .direct = c.opts.direct});
  if (!bfile) {
    co_return Unexpected(Error(
        bfile.error().code(),
        strfmt("could not open backing file '%s' of '%s': %s (chain: %s)", path.c_str(),
               name.c_str(), bfile.error().message().c_str(), chain_text(c.names, path).c_str())));
  }
  c.names.push_back(path);
  c.identities.push_back(id);
  auto backing = co_await open_layer(c, std::move(*bfile), ref->format, /*read_only=*/true);
  if (!backing) co_return Unexpected(std::move(backing).error());
  qcow2::attach_backing(*drv, std::move(*backing));
  co_return drv;
}

}  // namespace

// The lock QEMU's block layer takes on the file of an image, as measured against qemu-io and
// qemu-img 7.2 (docs/img.md, "Locking"). qcow2's file is its metadata child (block.c
// bdrv_default_perms_for_storage): a writer also takes resize, and nobody else may write or
// resize it unless force-share, which shares everything, is on. raw's file is a filtered child
// that passes on the BlockBackend's permissions, and those share all.
Status lock_image_file(File& f, const std::string& fmt, bool read_only, bool force_share) {
  if (force_share && !read_only) {
    // bdrv_open_common (block.c): sharing everything is only safe for a user that writes nothing.
    return invalid_argument("force-share=on can only be used with read-only images");
  }
  uint64_t perm = kPermConsistentRead;
  uint64_t shared = kPermAll;
  if (fmt == "qcow2") {
    if (!read_only) perm |= kPermWrite | kPermResize;
    if (!force_share) shared &= ~(kPermWrite | kPermResize);
  } else if (!read_only) {
    perm |= kPermWrite;
  }
  return f.lock(perm, shared);
}

Task<Result<std::unique_ptr<BlockDriver>>> open_image_file(IoLoop& loop, std::unique_ptr<File> file,
                                                           OpenOptions opts) {
  if (opts.backing == BackingPolicy::kIgnore && !opts.read_only) {
    // Without its backing image an overlay's copy-up would write zeros over its data.
    co_return invalid_argument(file->name() +
                               ": an image opened without its backing chain "
                               "must be opened read-only");
  }
  if (opts.force_share && !opts.read_only) {
    co_return invalid_argument("force-share=on can only be used with read-only images");
  }
  const FileOpener& opener = opts.opener ? *opts.opener : host_file_opener();
  ChainOpen c{loop, opts, opener, {file->name()}, {opener.identity(file->name())}};
  co_return co_await open_layer(c, std::move(file), opts.format, opts.read_only);
}

}  // namespace img
