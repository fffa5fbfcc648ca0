// Deterministic qcow2 write workloads and the flat disk they should produce, shared by the
// interop test (checked against qemu-img) and the crash test (checked after simulated crashes).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"
#include "img/status.h"

namespace img::test {

struct WorkOp {
  enum Kind { kWrite, kZero, kZeroUnmap, kDiscard, kFlush } kind = kWrite;
  uint64_t off = 0;
  uint64_t len = 0;
  uint32_t seed = 0;  // write pattern
};

inline const char* work_op_name(WorkOp::Kind k) {
  static const char* names[] = {"write", "write_zeroes", "write_zeroes(unmap)", "discard", "flush"};
  return names[k];
}

inline std::string describe(const WorkOp& op) {
  return std::string(work_op_name(op.kind)) + " off=" + std::to_string(op.off) +
         " len=" + std::to_string(op.len);
}

// The bytes a write with this seed puts at guest offset off + i: depend on both, so data that
// lands at the wrong place or comes from another write is caught.
inline void fill_pattern(uint8_t* p, uint64_t off, uint64_t len, uint32_t seed) {
  for (uint64_t i = 0; i < len; ++i) {
    uint64_t x = (off + i) * 0x9e3779b97f4a7c15ull + seed * 0x632be59bd9b4e019ull;
    p[i] = static_cast<uint8_t>((x >> 29) ^ (x >> 47) ^ seed);
  }
}

// Random ops over an image of `size` bytes: mostly unaligned writes up to max_len (some of them
// large enough to cross several clusters and L2 tables), zeroes with and without unmap, discards,
// and a flush every few ops.
inline std::vector<WorkOp> make_workload(uint64_t seed, uint64_t size, size_t count,
                                         uint64_t max_len, int flush_every = 7) {
  std::mt19937_64 rng(seed);
  std::vector<WorkOp> ops;
  auto pick_range = [&](uint64_t max) {
    uint64_t len = 1 + rng() % max;
    if (rng() % 8 == 0) len = std::min<uint64_t>(size, max * 4);  // an occasional big one
    len = std::min(len, size);
    uint64_t off = rng() % (size - len + 1);
    if (rng() % 10 == 0) off = size - len;  // the end of the image
    return std::pair{off, len};
  };
  for (size_t i = 0; i < count; ++i) {
    WorkOp op;
    if (flush_every > 0 && i % flush_every == uint64_t(flush_every - 1)) {
      op.kind = WorkOp::kFlush;
      ops.push_back(op);
      continue;
    }
    int r = int(rng() % 10);
    op.kind = r < 6   ? WorkOp::kWrite
              : r < 7 ? WorkOp::kZero
              : r < 8 ? WorkOp::kZeroUnmap
                      : WorkOp::kDiscard;
    auto [off, len] = pick_range(op.kind == WorkOp::kWrite ? max_len : max_len * 2);
    op.off = off;
    op.len = len;
    op.seed = static_cast<uint32_t>(rng());
    ops.push_back(op);
  }
  return ops;
}

// What a reader sees after op, given the driver's discard rule: qcow2 frees whole clusters only
// (the last, partial cluster of the image counts as whole), and leaves partial ones alone.
inline void apply_to_model(std::vector<uint8_t>& flat, const WorkOp& op, uint64_t cluster_size) {
  switch (op.kind) {
    case WorkOp::kWrite:
      fill_pattern(flat.data() + op.off, op.off, op.len, op.seed);
      break;
    case WorkOp::kZero:
    case WorkOp::kZeroUnmap:
      std::memset(flat.data() + op.off, 0, op.len);
      break;
    case WorkOp::kDiscard: {
      uint64_t size = flat.size();
      uint64_t end = op.off + op.len;
      uint64_t first = (op.off + cluster_size - 1) / cluster_size * cluster_size;
      uint64_t last = end == size ? end : end / cluster_size * cluster_size;
      if (last > first) std::memset(flat.data() + first, 0, last - first);
      break;
    }
    case WorkOp::kFlush:
      break;
  }
}

inline Task<Status> run_op(BlockDriver& d, const WorkOp& op) {
  switch (op.kind) {
    case WorkOp::kWrite: {
      std::vector<uint8_t> buf(op.len);
      fill_pattern(buf.data(), op.off, op.len, op.seed);
      co_return co_await d.write(op.off, buf.data(), buf.size());
    }
    case WorkOp::kZero:
      co_return co_await d.write_zeroes(op.off, op.len, {.may_unmap = false});
    case WorkOp::kZeroUnmap:
      co_return co_await d.write_zeroes(op.off, op.len, {.may_unmap = true});
    case WorkOp::kDiscard:
      co_return co_await d.discard(op.off, op.len);
    case WorkOp::kFlush:
      co_return co_await d.flush();
  }
  co_return Status{};
}

// Index of the first byte where a and b differ, or -1.
inline int64_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = std::min(a.size(), b.size());
  auto m = std::mismatch(a.begin(), a.begin() + n, b.begin());
  if (m.first != a.begin() + n) return m.first - a.begin();
  return a.size() == b.size() ? -1 : int64_t(n);
}

}  // namespace img::test
