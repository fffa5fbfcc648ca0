// Concurrent qcow2 workloads for the crash and model tests: many requests spawned at once on one
// IoLoop (each after a few random yields, so they interleave differently per seed), the logical
// time at which each was issued and acknowledged, and the check of what a reader may see
// afterwards given that any requests in flight together may land in any order.
//
// Ordering rules the check relies on (the block-layer contract, not a qcow2 detail):
//   - a request Y issued after X was acknowledged lands after X;
//   - a flush covers exactly the writes acknowledged before the flush was issued;
//   - a request that failed, or never completed, may or may not have landed, at any time;
//   - a discard may leave the old data or zeros (or, on a v2 image over a backing file, the
//     backing file's data), so it never hides an older value.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "mem_fs.h"
#include "qcow2_workload.h"

namespace img::test {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

// One request of a concurrent batch and what happened to it.
struct Req {
  WorkOp op;
  int delay = 0;  // loop turns to wait before issuing it
  int64_t start = kNever;
  int64_t end = kNever;  // acknowledged at; kNever if it failed or is still running
  std::string error;     // why it failed
  bool ok() const { return end != kNever; }
};

inline std::string describe(const Req& r) {
  return describe(r.op) + " [" + std::to_string(r.start) + ", " +
         (r.ok() ? std::to_string(r.end) : "failed: " + r.error) + "]";
}

// Issues every request of reqs at once on the loop and runs them to completion. Logical time
// advances at every issue and every acknowledgement. Returns the most requests in flight at once.
inline size_t run_concurrently(IoLoop& loop, BlockDriver& d, std::vector<Req>& reqs) {
  struct Clock {
    int64_t now = 0;
    size_t in_flight = 0, max_in_flight = 0;
  } clock;
  for (Req& r : reqs) {
    r.start = r.end = kNever;
    loop.spawn([](IoLoop& loop, BlockDriver& d, Req& r, Clock& c) -> Task<void> {
      for (int i = 0; i < r.delay; ++i) co_await loop.yield();
      r.start = ++c.now;
      c.max_in_flight = std::max(c.max_in_flight, ++c.in_flight);
      Status s = co_await run_op(d, r.op);
      --c.in_flight;
      int64_t t = ++c.now;
      if (s) {
        r.end = t;
      } else {
        r.error = s.error().to_string();
      }
    }(loop, d, r, clock));
  }
  loop.drain();
  return clock.max_in_flight;
}

// A random concurrent batch over an image of `size` bytes: writes (aligned and unaligned, many
// into a few hot clusters, so writers share clusters and allocating writes race each other),
// write_zeroes with and without unmap, discards, and (flush_weight > 0) flushes in the middle.
inline std::vector<Req> make_batch(std::mt19937_64& rng, uint64_t size, uint64_t cluster,
                                   size_t count, int max_delay, int flush_weight) {
  std::vector<uint64_t> hot;
  for (int i = 0; i < 4; ++i) hot.push_back(rng() % ((size + cluster - 1) / cluster));
  std::vector<Req> reqs;
  for (size_t i = 0; i < count; ++i) {
    Req r;
    // Half are issued at once, the rest trickle in while the first ones run.
    r.delay = max_delay && rng() % 2 ? int(rng() % (max_delay + 1)) : 0;
    uint32_t k = rng() % (20 + flush_weight);
    WorkOp& op = r.op;
    op.seed = static_cast<uint32_t>(rng()) | 1;
    if (k >= 20) {
      op.kind = WorkOp::kFlush;
      reqs.push_back(r);
      continue;
    }
    op.kind = k < 12   ? WorkOp::kWrite
              : k < 14 ? WorkOp::kZero
              : k < 16 ? WorkOp::kZeroUnmap
                       : WorkOp::kDiscard;
    bool aligned = rng() % 3 == 0;
    uint64_t base = rng() % 2 ? hot[rng() % hot.size()] * cluster : rng() % size;
    if (aligned) {
      op.off = std::min(base / cluster * cluster, size - 1);
      op.len = cluster * (1 + rng() % 3);
    } else {
      op.off = std::min(base + rng() % cluster, size - 1);
      op.len = 1 + rng() % (rng() % 4 == 0 ? 3 * cluster : cluster);
    }
    op.len = std::min(op.len, size - op.off);
    reqs.push_back(r);
  }
  return reqs;
}

// The bytes [a, b) of the guest disk before a batch, and what each request may leave there.
class Acceptor {
 public:
  // initial: the guest content before the requests (the backing image's, or zeros); backing:
  // the bytes a v2 discard may uncover (the backing image's; empty without one).
  Acceptor(std::vector<uint8_t> initial, std::vector<uint8_t> backing, uint64_t cluster)
      : initial_(std::move(initial)), backing_(std::move(backing)), cluster_(cluster) {}

  // Checks got against reqs, treating writes acknowledged before a successful flush as
  // durable (durable_only) or every acknowledged write as landed (after a drain without a
  // crash). Returns "" or what is wrong at the first bad byte.
  std::string check(const std::vector<Req>& reqs, const std::vector<uint8_t>& got,
                    bool durable_only) const {
    const uint64_t size = initial_.size();
    // Which acknowledged requests are known to have landed.
    int64_t last_flush_start = -1;
    for (const Req& r : reqs) {
      if (r.op.kind == WorkOp::kFlush && r.ok())
        last_flush_start = std::max(last_flush_start, r.start);
    }
    auto landed = [&](const Req& r) {
      return r.ok() && (!durable_only || r.end < last_flush_start);
    };
    std::set<uint64_t> cuts{0, size};
    for (const Req& r : reqs) {
      auto [a, b] = span(r);
      if (a < b) cuts.insert({a, b});
    }
    if (backing_.size() < size) cuts.insert(backing_.size());
    for (auto it = cuts.begin(); std::next(it) != cuts.end(); ++it) {
      uint64_t a = *it, b = *std::next(it);
      // Requests covering [a, b), and which of them may still show: those that no landed
      // write or write_zeroes issued after their acknowledgement overwrote.
      std::vector<const Req*> cover;
      for (const Req& r : reqs) {
        auto [ra, rb] = span(r);
        if (ra <= a && b <= rb) cover.push_back(&r);
      }
      int64_t hidden_before = -1;  // values acknowledged before this time are overwritten
      for (const Req* r : cover) {
        if (landed(*r) && r->op.kind != WorkOp::kDiscard) {
          hidden_before = std::max(hidden_before, r->start);
        }
      }
      bool initial_ok = hidden_before < 0;
      std::vector<const Req*> may;
      for (const Req* r : cover) {
        if (r->end == kNever || r->end >= hidden_before) may.push_back(r);
      }
      for (uint64_t i = a; i < b; ++i) {
        if (initial_ok && got[i] == initial_[i]) continue;
        bool ok = false;
        for (const Req* r : may) {
          if (value_ok(*r, i, got[i])) {
            ok = true;
            break;
          }
        }
        if (ok) continue;
        std::string msg = "byte " + std::to_string(i) + " reads " + std::to_string(got[i]) +
                          (initial_ok ? "; initial " + std::to_string(initial_[i]) : "") +
                          "; may show:";
        for (const Req* r : may)
          msg += "\n  " + describe(*r) + " -> " + std::to_string(value(*r, i));
        msg += "\n hidden by landed requests issued after time " + std::to_string(hidden_before);
        for (const Req* r : cover) {
          if (std::find(may.begin(), may.end(), r) == may.end()) msg += "\n  " + describe(*r);
        }
        return msg;
      }
    }
    return "";
  }

 private:
  // The bytes a request changes: a discard only whole clusters (the image's last, partial
  // cluster counts as whole), and a flush none.
  std::pair<uint64_t, uint64_t> span(const Req& r) const {
    const WorkOp& op = r.op;
    if (op.kind == WorkOp::kFlush) return {0, 0};
    if (op.kind != WorkOp::kDiscard) return {op.off, op.off + op.len};
    uint64_t end = op.off + op.len;
    uint64_t first = div_round_up(op.off, cluster_) * cluster_;
    uint64_t last = end == initial_.size() ? end : end / cluster_ * cluster_;
    return {first, std::max(first, last)};
  }
  static uint8_t value(const Req& r, uint64_t i) {
    if (r.op.kind != WorkOp::kWrite) return 0;
    uint8_t v;
    fill_pattern(&v, i, 1, r.op.seed);
    return v;
  }
  bool value_ok(const Req& r, uint64_t i, uint8_t got) const {
    if (got == value(r, i)) return true;
    return r.op.kind == WorkOp::kDiscard && i < backing_.size() && got == backing_[i];
  }
  static uint64_t div_round_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

  std::vector<uint8_t> initial_;
  std::vector<uint8_t> backing_;
  uint64_t cluster_;
};

// Serves a FaultFile (the overlay under test, shared so it outlives each driver) at one path
// and everything else (the backing image) from a MemFs.
class OverlayFs final : public FileOpener {
 public:
  OverlayFs(IoLoop& loop, std::string path) : path_(std::move(path)), fs_(&loop) {
    overlay_ = std::make_shared<FaultFile>(&loop, path_);
  }
  FaultFile& overlay() { return *overlay_; }
  MemFs& fs() { return fs_; }
  const std::string& path() const { return path_; }

  Result<std::unique_ptr<File>> open(IoLoop& loop, const std::string& path,
                                     FileOpenOptions opts) const override {
    if (identity(path) != identity(path_)) return fs_.open(loop, path, opts);
    return std::unique_ptr<File>(new View(overlay_));
  }
  std::string identity(const std::string& path) const override { return fs_.identity(path); }

 private:
  class View final : public File {
   public:
    explicit View(std::shared_ptr<FaultFile> f) : f_(std::move(f)) {}
    Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
      return f_->readv(off, iov);
    }
    Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
      return f_->writev(off, iov);
    }
    Task<Status> flush() override { return f_->flush(); }
    Task<Status> discard(uint64_t off, uint64_t len) override { return f_->discard(off, len); }
    Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
      return f_->write_zeroes(off, len);
    }
    Task<Status> allocate(uint64_t off, uint64_t len) override { return f_->allocate(off, len); }
    Task<Status> truncate(uint64_t size) override { return f_->truncate(size); }
    Result<uint64_t> size() override { return f_->size(); }
    bool read_only() const override { return f_->read_only(); }
    const std::string& name() const override { return f_->name(); }

   private:
    std::shared_ptr<FaultFile> f_;
  };

  std::string path_;
  MemFs fs_;
  std::shared_ptr<FaultFile> overlay_;
};

}  // namespace img::test
