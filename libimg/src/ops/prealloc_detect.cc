#include "ops/prealloc_detect.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "img/bytes.h"
#include "qcow2/format.h"

namespace img {
namespace {

bool pread_all(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

bool qcow2_looks_metadata_preallocated(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  uint8_t h[104] = {};
  if (!pread_all(fd, h, 72, 0)) return false;
  const uint32_t version = load_be32(h + 4);
  const uint32_t cluster_bits = load_be32(h + 20);
  if (cluster_bits < qcow2::kMinClusterBits || cluster_bits > qcow2::kMaxClusterBits) return false;
  uint32_t order = 4;
  if (version >= 3) {
    if (!pread_all(fd, h + 72, 32, 72)) return false;
    order = load_be32(h + 96);
    if (order > 6) return false;
  }
  const uint64_t cs = uint64_t{1} << cluster_bits;
  const uint64_t rt_off = load_be64(h + 48);
  const uint64_t rt_clusters = load_be32(h + 56);
  const uint64_t file_length = static_cast<uint64_t>(st.st_size);
  const uint64_t real_clusters = static_cast<uint64_t>(st.st_blocks) * 512 / cs;
  const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  const uint64_t end_cluster = (file_length + cs - 1) / cs;
  if (rt_clusters == 0 || rt_clusters > (8u << 20) / cs + 1 || rt_off % cs) return false;
  std::vector<uint8_t> rt(rt_clusters * cs);
  if (!pread_all(fd, rt.data(), rt.size(), rt_off)) return false;
  const uint64_t per_block = cs * 8 >> order;
  std::vector<uint8_t> block(cs);
  uint64_t count = 0;
  // Clusters with a non-zero refcount, in order, until the threshold (as QEMU counts them;
  // a missing refcount block counts zeros for its clusters).
  for (uint64_t b = 0; b * per_block < end_cluster && count < threshold; ++b) {
    if ((b + 1) * 8 > rt.size()) break;
    const uint64_t off = load_be64(&rt[b * 8]) & qcow2::kRefTableOffsetMask;
    if (off == 0 || off % cs) continue;
    if (!pread_all(fd, block.data(), cs, off)) return false;
    const uint64_t n = std::min(per_block, end_cluster - b * per_block);
    for (uint64_t i = 0; i < n && count < threshold; ++i) {
      count += qcow2::get_refcount(block.data(), i, order) != 0;
    }
  }
  return count >= threshold;
}

}  // namespace img
