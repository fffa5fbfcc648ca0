// The two whole-tree passes of internal snapshots (snapshot.cc says when each runs and why the
// order is crash-safe): refcount_tree adds a delta to everything an L1 table reaches,
// fix_copied sets OFLAG_COPIED on the active entries exactly where the refcount is 1.
//
// Both stream the L2 tables in batches (refcount_batch.h) and split each batch's tables among
// the shared worker threads (util/thread_pool.h): decoding 16 M entries of a 1 TiB image is
// the CPU part of the work. The workers only read the refcount blocks and write their own
// tables and result slots; everything that loads blocks or changes refcounts runs on the loop
// thread between the parallel steps, so the workers never race with it.
#include <algorithm>
#include <type_traits>

#include "qcow2/driver.h"
#include "qcow2/refcount_batch.h"
#include "util/async.h"
#include "util/thread_pool.h"

namespace img::qcow2 {

namespace {
// Refcount blocks a pass may hold before writing them out early (a 1 TiB image with 64 KiB
// clusters has 32 MiB of them).
constexpr uint64_t kMaxHeldRefcountBytes = 512ull << 20;
// Runs of contiguous host clusters a refcount pass collects before applying them (24 bytes
// each): at most about this many entries' worth of tables are decoded per parallel step.
constexpr size_t kMaxHeldRuns = 512 * 1024;

// [begin, end) of part k of n equal parts of [0, size).
std::pair<size_t, size_t> part(size_t size, size_t n, size_t k) {
  return {size * k / n, size * (k + 1) / n};
}

size_t workers() { return std::max<size_t>(1, ThreadPool::shared().size()); }
}  // namespace

Task<Status> Qcow2Image::refcount_tree(RefcountBatch& rb, const std::vector<uint64_t>& l1,
                                       int64_t delta) {
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  CO_ASSIGN_OR_RETURN(L2Stream st, L2Stream::make(*file_, l1, cluster_size_, fsize));
  const uint64_t cmask = cluster_size_ - 1;
  // Calls fn(first cluster, count) for the host clusters table t of the batch references
  // (itself first): the contiguous clusters of neighbouring entries as one run, the common
  // entry decoded inline (16 M of them in a 1 TiB image). A cluster referenced twice (two
  // compressed clusters sharing a host cluster) comes twice, in separate runs.
  auto for_each_ref = [&](size_t t, auto&& fn) -> Status {
    fn(st.offset(t) >> cluster_bits_, 1);
    const uint8_t* p = st.table(t);
    uint64_t run_first = 0, run_n = 0;
    auto extend = [&](uint64_t c) {
      if (run_n && c == run_first + run_n) {
        ++run_n;
        return;
      }
      if (run_n) fn(run_first, run_n);
      run_first = c;
      run_n = 1;
    };
    for (uint64_t i = 0; i < l2_entries_; ++i) {
      uint64_t host;
      if (!extended_ && plain_host(load_be64(p + i * 8), cmask, &host)) {
        if (host) extend(host >> cluster_bits_);
        continue;
      }
      const RawL2 r = load_l2(p, i, l2_entry_bytes_);
      if (r == RawL2{}) continue;
      L2Decoded dec = decode_l2(r.entry, cluster_bits_, h_.version, extended_, r.bitmap);
      if (dec.defect != L2Defect::kNone) RETURN_IF_ERROR(decode_entry(0, r));
      const L2Entry& e = dec.entry;
      if (e.has_host_cluster()) {
        extend(e.host_offset >> cluster_bits_);
      } else if (e.kind == ClusterKind::kCompressed) {
        HostRun run = host_run_of(e);
        fn(run.first_cluster, run.count);
      }
    }
    if (run_n) fn(run_first, run_n);
    return {};
  };
  // The workers decode a group of tables into runs (one list per worker, in table order), the
  // loop thread loads the refcount blocks the runs need that are not in memory yet (one
  // coalesced read; neighbouring clusters share a block) and applies the runs. A group is as
  // many tables as keep the runs within kMaxHeldRuns (a fragmented image has one run per
  // entry; a preallocated one about one per table).
  struct Run {
    uint64_t first, count;
    int64_t delta;
  };
  const size_t nw = workers();
  std::vector<std::vector<Run>> runs(nw);
  std::vector<Status> errors(nw);
  std::vector<uint64_t> need;
  const size_t group = std::max<size_t>(1, kMaxHeldRuns / (l2_entries_ + 1));
  for (;;) {
    CO_ASSIGN_OR_RETURN(bool more, co_await st.next());
    if (!more) break;
    for (size_t g = 0; g < st.size(); g += group) {
      const size_t n = std::min(group, st.size() - g);
      const size_t parts = std::min(nw, n);
      co_await parallel_for(ThreadPool::shared(), loop_, parts, [&](size_t k) {
        runs[k].clear();
        errors[k] = Status{};
        auto [b, e] = part(n, parts, k);
        for (size_t t = g + b; t < g + e; ++t) {
          // A table named by several L1 entries counts (with all it maps) once per entry.
          const int64_t d = delta * int64_t(st.refs(t));
          errors[k] = for_each_ref(t, [&](uint64_t c, uint64_t cnt) {
            runs[k].push_back({c, cnt, d});
          });
          if (!errors[k]) return;
        }
      });
      for (size_t k = 0; k < parts; ++k) CO_RETURN_IF_ERROR(std::move(errors[k]));
      if (rb.bytes_held() > kMaxHeldRefcountBytes) {
        CO_RETURN_IF_ERROR(co_await rb.write_dirty());
        rb.drop();
      }
      need.clear();
      uint64_t last = UINT64_MAX;
      for (size_t k = 0; k < parts; ++k) {
        for (const Run& r : runs[k]) {
          for (uint64_t b = rb.block_index(r.first); b <= rb.block_index(r.first + r.count - 1);
               ++b) {
            if (b != last && !rb.block_loaded(b)) need.push_back(b);
            last = b;
          }
        }
      }
      if (!need.empty()) CO_RETURN_IF_ERROR(co_await rb.load_blocks(std::move(need)));
      for (size_t k = 0; k < parts; ++k) {
        for (const Run& r : runs[k]) CO_RETURN_IF_ERROR(rb.add_run(r.first, r.count, r.delta));
      }
    }
  }
  co_return Status{};
}

Task<Status> Qcow2Image::fix_copied(RefcountBatch& rb, bool durable) {
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  CO_ASSIGN_OR_RETURN(L2Stream st, L2Stream::make(*file_, l1_, cluster_size_, fsize));
  // Tables shared with a snapshot are fixed too: the flags matter only to the active image
  // (the spec ignores them in inactive tables), and QEMU's check reads them there.
  std::vector<uint64_t> l2_clusters;
  for (uint64_t e : l1_) {
    if (e & kL1OffsetMask) l2_clusters.push_back((e & kL1OffsetMask) >> cluster_bits_);
  }
  CO_RETURN_IF_ERROR(co_await rb.load(l2_clusters));
  std::vector<uint64_t> new_l1 = l1_;
  for (auto& e : new_l1) {
    uint64_t off = e & kL1OffsetMask;
    if (!off) continue;
    e = rb.get(off >> cluster_bits_) == 1 ? (e | kOflagCopied) : (e & ~kOflagCopied);
  }
  // One pass per table; a table that meets a refcount block not in memory yet is done again
  // after one load for the whole batch (rare: the passes before loaded what the tree uses).
  // Order is refcount_order as a constant, so each refcount read is one load. Runs on the
  // workers: reads rb, writes only table t and missing.
  auto fix_table_as = [&]<uint32_t Order>(std::integral_constant<uint32_t, Order>, size_t t,
                                          std::vector<uint64_t>& missing) -> Status {
    uint8_t* p = st.table(t);
    bool changed = false;
    const uint64_t cmask = cluster_size_ - 1;
    const uint64_t emask = rb.entries_per_block() - 1;
    uint64_t cur_b = UINT64_MAX;  // the block of the last entry, and its refcounts
    const uint8_t* blk = nullptr;
    for (uint64_t i = 0; i < l2_entries_; ++i) {
      // The first 8 bytes of an entry, extended or not, hold the standard descriptor.
      const uint64_t raw = load_be64(p + i * l2_entry_bytes_);
      uint64_t host;
      bool copied;
      if (!extended_ && plain_host(raw, cmask, &host)) {
        if (!host) continue;
        copied = raw & kOflagCopied;
      } else {
        const RawL2 r = load_l2(p, i, l2_entry_bytes_);
        if (r == RawL2{}) continue;
        L2Decoded dec = decode_l2(raw, cluster_bits_, h_.version, extended_, r.bitmap);
        if (dec.defect != L2Defect::kNone) RETURN_IF_ERROR(decode_entry(0, r));
        if (!dec.entry.has_host_cluster()) continue;
        host = dec.entry.host_offset;
        copied = dec.entry.copied;
      }
      const uint64_t c = host >> cluster_bits_;
      if (const uint64_t b = rb.block_index(c); b != cur_b) {
        cur_b = b;
        blk = rb.block_data(b);
      }
      if (!blk) {
        missing.push_back(c);
        continue;
      }
      bool want = get_refcount(blk, c & emask, Order) == 1;
      if (want == copied) continue;
      store_be64(p + i * l2_entry_bytes_, want ? (raw | kOflagCopied) : (raw & ~kOflagCopied));
      changed = true;
    }
    if (changed) st.mark_changed(t);
    return {};
  };
  auto fix_table = [&](size_t t, std::vector<uint64_t>& missing) -> Status {
    switch (refcount_order_) {
      case 0:
        return fix_table_as(std::integral_constant<uint32_t, 0>{}, t, missing);
      case 1:
        return fix_table_as(std::integral_constant<uint32_t, 1>{}, t, missing);
      case 2:
        return fix_table_as(std::integral_constant<uint32_t, 2>{}, t, missing);
      case 3:
        return fix_table_as(std::integral_constant<uint32_t, 3>{}, t, missing);
      case 4:
        return fix_table_as(std::integral_constant<uint32_t, 4>{}, t, missing);
      case 5:
        return fix_table_as(std::integral_constant<uint32_t, 5>{}, t, missing);
      default:
        return fix_table_as(std::integral_constant<uint32_t, 6>{}, t, missing);
    }
  };
  const size_t nw = workers();
  std::vector<std::vector<uint64_t>> missing(nw);  // clusters whose block was not in memory
  std::vector<std::vector<size_t>> redo(nw);       // the tables that met them
  std::vector<Status> errors(nw);
  std::vector<uint64_t> all_missing;
  bool more = true;
  auto read_and_fix = [&]() -> Task<Status> {
    CO_ASSIGN_OR_RETURN(more, co_await st.next());
    if (!more) co_return Status{};
    const size_t parts = std::min(nw, st.size());
    co_await parallel_for(ThreadPool::shared(), loop_, parts, [&](size_t k) {
      missing[k].clear();
      redo[k].clear();
      errors[k] = Status{};
      auto [b, e] = part(st.size(), parts, k);
      for (size_t t = b; t < e; ++t) {
        const size_t before = missing[k].size();
        errors[k] = fix_table(t, missing[k]);
        if (!errors[k]) return;
        if (missing[k].size() != before) redo[k].push_back(t);
      }
    });
    all_missing.clear();
    for (size_t k = 0; k < parts; ++k) {
      CO_RETURN_IF_ERROR(std::move(errors[k]));
      all_missing.insert(all_missing.end(), missing[k].begin(), missing[k].end());
    }
    if (!all_missing.empty()) {
      CO_RETURN_IF_ERROR(co_await rb.load(all_missing));
      std::vector<uint64_t> again;
      for (size_t k = 0; k < parts; ++k) {
        for (size_t t : redo[k]) CO_RETURN_IF_ERROR(fix_table(t, again));
      }
    }
    co_return Status{};
  };
  // A batch's changed tables are written while the next batch is read and fixed (the write
  // goes to the kernel's workers, the fixing to ours).
  CO_RETURN_IF_ERROR(co_await read_and_fix());
  while (more) {
    CO_RETURN_IF_ERROR(co_await both(loop_, st.write_changed(st.slot()), read_and_fix()));
  }
  CO_RETURN_IF_ERROR(co_await st.write_changed());
  if (new_l1 != l1_) {
    auto raw = encode_l1(new_l1);
    CO_RETURN_IF_ERROR(co_await file_->write(h_.l1_table_offset, raw.data(), raw.size()));
    l1_ = std::move(new_l1);
  }
  if (durable) CO_RETURN_IF_ERROR(co_await file_->flush());
  co_return Status{};
}

}  // namespace img::qcow2
