// ChainMapper: qemu's block status through a chain (block/io.c bdrv_co_block_status_above and
// file-posix's SEEK_DATA/SEEK_HOLE answer for raw files), on BlockDriver::block_status.
#include "img/block_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "img/file.h"
#include "img/image.h"
#include "img/qcow2.h"
#include "ops/prealloc_detect.h"

namespace img {

Task<Result<std::vector<ChainLayer>>> describe_chain(IoLoop& loop, const std::string& path,
                                                     const std::string& fmt) {
  std::vector<ChainLayer> layers;
  std::vector<std::string> seen;
  std::string p = path, f = fmt;
  const FileOpener& opener = host_file_opener();
  for (;;) {
    CO_ASSIGN_OR_RETURN(std::unique_ptr<File> file, open_file(loop, p, {.read_only = true}));
    if (f.empty()) {
      CO_ASSIGN_OR_RETURN(f, co_await probe_format(*file));
    }
    layers.push_back({p, f, p});
    seen.push_back(opener.identity(p));
    if (f != "qcow2") break;
    CO_ASSIGN_OR_RETURN(Qcow2Info info, co_await read_qcow2_info(*file));
    if (!info.data_file.empty()) layers.back().data_path = info.data_file;
    if (info.backing_file.empty()) break;
    // The same limits open_image applies, so a chain that opened describes the same way.
    if (layers.size() > 64)
      co_return invalid_argument("backing chain of '" + path + "' is too deep");
    p = combine_backing_path(p, info.backing_file);
    f = info.backing_format;
    if (std::find(seen.begin(), seen.end(), opener.identity(p)) != seen.end()) {
      co_return invalid_argument("Backing file '" + p + "' creates an infinite loop.");
    }
  }
  co_return layers;
}

Result<std::unique_ptr<ChainMapper>> ChainMapper::create(BlockDriver& top,
                                                         std::vector<ChainLayer> layers) {
  std::unique_ptr<ChainMapper> m(new ChainMapper(top, std::move(layers)));
  for (BlockDriver* d = &top; d != nullptr; d = d->backing()) m->drivers_.push_back(d);
  if (m->drivers_.size() != m->layers_.size()) {
    return invalid_argument("the chain's description does not match the open chain");
  }
  for (size_t i = 0; i < m->layers_.size(); ++i) {
    int fd = -1;
    const bool raw = std::string(m->drivers_[i]->format_name()) == "raw";
    m->raw_nbd_.push_back(raw && is_nbd_name(m->layers_[i].path));
    if (raw && !m->raw_nbd_.back()) {
      fd = ::open(m->layers_[i].path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return io_error(errno, "open " + m->layers_[i].path);
    }
    m->hole_fds_.push_back(fd);
    int rfd = -1;
    const ChainLayer& l = m->layers_[i];
    if (std::string(m->drivers_[i]->format_name()) == "qcow2" && !is_nbd_name(l.path)) {
      int qfd = ::open(l.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (qfd >= 0 && qcow2_looks_metadata_preallocated(qfd)) {
        if (l.data_path == l.path) {
          rfd = qfd;
          qfd = -1;
        } else if (!is_nbd_name(l.data_path)) {
          rfd = ::open(l.data_path.c_str(), O_RDONLY | O_CLOEXEC);
        }
      }
      if (qfd >= 0) ::close(qfd);
    }
    m->recurse_fds_.push_back(rfd);
  }
  return m;
}

ChainMapper::~ChainMapper() {
  for (int fd : hole_fds_) {
    if (fd >= 0) ::close(fd);
  }
  for (int fd : recurse_fds_) {
    if (fd >= 0) ::close(fd);
  }
}

namespace {

// file-posix's answer for [off, off+len) of a raw file: a data extent or a hole, with its
// length. A file system that cannot tell (lseek fails otherwise) reports data.
void raw_extent(int fd, uint64_t off, uint64_t len, ChainStatus& st) {
  st.offset_valid = true;
  st.offset = off;
  st.allocated = true;
  off_t data = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
  if (data < 0) {
    st.length = len;
    // ENXIO: off lies in the hole that runs to the end of the file.
    (errno == ENXIO ? st.zero : st.data) = true;
    return;
  }
  if (static_cast<uint64_t>(data) > off) {
    st.zero = true;
    st.length = std::min<uint64_t>(len, data - off);
    return;
  }
  off_t hole = ::lseek(fd, static_cast<off_t>(off), SEEK_HOLE);
  st.data = true;
  if (hole < 0 || static_cast<uint64_t>(hole) <= off) {
    st.length = len;
    return;
  }
  // QEMU queries whole sectors: a data extent that ends in a partial one at EOF covers it
  // (the end rounds up, whatever sector off lies in).
  uint64_t end = (static_cast<uint64_t>(hole) + 511) / 512 * 512;
  st.length = std::min(len, end - off);
}

}  // namespace

uint64_t ChainMapper::qemu_size(size_t depth) const {
  uint64_t n = drivers_[depth]->size();
  return hole_fds_[depth] >= 0 ? (n + 511) / 512 * 512 : n;
}

Task<Result<ChainStatus>> ChainMapper::status(uint64_t off, uint64_t len) {
  ChainStatus st;
  for (size_t depth = 0; depth < drivers_.size(); ++depth) {
    BlockStatus bs;
    if (off >= drivers_[depth]->size()) {
      // The partial sector past a raw file's end, which only QEMU's rounded size reaches.
      bs = BlockStatus{.kind = BlockStatus::Kind::kData, .length = len};
    } else {
      uint64_t n = std::min(len, drivers_[depth]->size() - off);
      CO_ASSIGN_OR_RETURN(bs, co_await drivers_[depth]->block_status(off, n));
    }
    // A qcow2 layer reads its raw backing file up to the file's rounded size.
    if (bs.kind == BlockStatus::Kind::kUnallocated && depth + 1 < drivers_.size() &&
        off < qemu_size(depth + 1)) {
      bs.kind = BlockStatus::Kind::kBacking;
      bs.length = std::min(bs.length, qemu_size(depth + 1) - off);
    }
    if (bs.length == 0) co_return corruption("block status of an empty range");
    len = std::min(len, bs.length);
    st = ChainStatus{};
    st.depth = static_cast<unsigned>(depth);
    st.layer = &layers_[depth];
    if (bs.kind == BlockStatus::Kind::kBacking && depth + 1 < drivers_.size()) continue;
    // A raw layer answers from the file system itself, holes with their offset as qemu prints
    // them (the raw driver reports a hole as kZero without one).
    const bool raw_layer = hole_fds_[depth] >= 0 &&
                           (bs.kind == BlockStatus::Kind::kData || bs.kind == BlockStatus::Kind::kZero);
    if (raw_layer) {
      raw_extent(hole_fds_[depth], off, len, st);
      len = st.length;
      break;
    }
    // nbd's block status (block/nbd.c nbd_client_co_block_status) answers OFFSET_VALID for
    // data and zeros alike: the export is its own "file".
    if (raw_nbd_[depth] && bs.kind != BlockStatus::Kind::kBacking) {
      st.offset_valid = st.allocated = true;
      st.offset = off;
      st.data = bs.kind == BlockStatus::Kind::kData;  // not NBD_STATE_HOLE
      st.zero = bs.kind == BlockStatus::Kind::kZero || bs.known_zero;
      break;
    }
    switch (bs.kind) {
      case BlockStatus::Kind::kData:
        st.data = st.allocated = true;
        if (bs.host_offset) {
          st.offset_valid = true;
          st.offset = *bs.host_offset;
          if (recurse_fds_[depth] >= 0) {
            // BDRV_BLOCK_RECURSE: the file's own answer limits the run, and a hole (or the
            // file's end) reads as zeros.
            ChainStatus f;
            raw_extent(recurse_fds_[depth], *bs.host_offset, len, f);
            len = std::min(len, f.length);
            st.zero = f.zero;
          }
        }
        break;
      case BlockStatus::Kind::kZero:
        st.zero = st.allocated = true;
        break;
      case BlockStatus::Kind::kUnallocated:
      case BlockStatus::Kind::kBacking:
        // Nothing below answers: QEMU reports zeros, not allocated, at this depth.
        st.zero = true;
        break;
    }
    if (bs.kind != BlockStatus::Kind::kData && bs.host_offset) {
      // Zeros in a host cluster kept (ZERO_ALLOC, UNALLOCATED_ALLOC): qemu-img map prints where.
      st.offset_valid = true;
      st.offset = *bs.host_offset;
    }
    break;
  }
  st.length = len;
  st.eof = off + len == size();
  co_return st;
}

}  // namespace img
