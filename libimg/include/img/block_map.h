// The status of a range through a whole backing chain, as QEMU's block layer reports it to
// qemu-img map, compare and measure: which image of the chain answers (depth), and the block
// status flags data / zero / allocated / offset-valid. It walks BlockDriver::block_status down
// backing() and, for raw layers, asks the host file where its holes are (SEEK_DATA/SEEK_HOLE),
// since a hole in a raw file reads as zeros without reading it (QEMU's file-posix does the same).
//
//   auto layers = co_await img::describe_chain(loop, "top.qcow2", "");
//   auto mapper = img::ChainMapper::create(*top, *layers);
//   auto st = co_await mapper->status(0, top->size());
//
// Thread-safety: one IoLoop thread, like the drivers it reads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "img/status.h"
#include "img/task.h"

namespace img {

// One image of a backing chain: the path QEMU names it by (the top image as given, each backing
// file combined with its overlay's folder) and its format.
struct ChainLayer {
  std::string path;
  std::string format;  // "raw" or "qcow2"
  // The file that holds the layer's data, where offsets point: path, or a qcow2 image's
  // external data file (its name as recorded, which QEMU opens as it stands).
  std::string data_path;
};

// Reads the headers along the chain from path down (without opening drivers). fmt is the top
// image's format ("" probes); a qcow2 layer's backing format, when recorded, names the next.
Task<Result<std::vector<ChainLayer>>> describe_chain(IoLoop& loop, const std::string& path,
                                                     const std::string& fmt);

// QEMU's BDRV_BLOCK_* view of one run.
struct ChainStatus {
  uint64_t length = 0;
  bool data = false;          // BDRV_BLOCK_DATA
  bool zero = false;          // BDRV_BLOCK_ZERO: reads as zeros
  bool allocated = false;     // BDRV_BLOCK_ALLOCATED: some image of the chain holds the range
  bool offset_valid = false;  // BDRV_BLOCK_OFFSET_VALID: offset is where it lies in layer's file
  bool eof = false;           // BDRV_BLOCK_EOF: the run reaches the end of the top image
  uint64_t offset = 0;
  unsigned depth = 0;  // 0: the top image; n: its n-th backing file
  // The image whose file holds the range (meaningful with offset_valid).
  const ChainLayer* layer = nullptr;
};

class ChainMapper {
 public:
  // top is the open chain's top driver; layers its description, one per driver of the chain.
  // Raw layers' host files are opened read-only for the hole queries.
  static Result<std::unique_ptr<ChainMapper>> create(BlockDriver& top,
                                                     std::vector<ChainLayer> layers);
  ~ChainMapper();

  // The status of [off, off+len) from off on: one run (length <= len), like
  // bdrv_block_status_above(top, NULL) and qemu-img map's get_block_status.
  // REQUIRES: off + len <= size(), len > 0.
  Task<Result<ChainStatus>> status(uint64_t off, uint64_t len);

  const std::vector<ChainLayer>& layers() const { return layers_; }
  // The size QEMU sees: a raw image counts whole 512-byte sectors, its partial last one read as
  // the file's trailing hole.
  uint64_t size() const { return qemu_size(0); }

 private:
  uint64_t qemu_size(size_t depth) const;
  ChainMapper(BlockDriver& top, std::vector<ChainLayer> layers) : top_(top), layers_(layers) {}
  std::vector<BlockDriver*> drivers_;
  BlockDriver& top_;
  std::vector<ChainLayer> layers_;
  std::vector<int> hole_fds_;  // per layer: a raw layer's host file, else -1
  // Per layer: a qcow2 layer that looks metadata-preallocated (ops/prealloc_detect.h): the file
  // holding its data, asked about holes in its data runs as qemu does; else -1.
  std::vector<int> recurse_fds_;
  // Per layer: raw on an NBD export, whose guest offsets are its own (qemu prints them).
  std::vector<bool> raw_nbd_;
};

}  // namespace img
