// block_status: what a guest range holds, as one run of one kind.
//
// A run goes on across L2 tables: an L1 entry of 0 means that "the L2 table and all clusters
// described by it are unallocated" (qcow2.rst, "Cluster mapping"), so it answers for its whole
// L2 table's range (512 MiB with 64 KiB clusters) without any read; consecutive L2 entries of
// the same kind merge, data entries only while their host clusters are contiguous. So the cost
// of walking an image follows its allocated metadata, not its virtual size: an empty 1 PiB image
// answers in one call.
#include "qcow2/driver.h"

namespace img::qcow2 {
namespace {

// Allocated L2 tables one call reads at most: a long data run is answered in pieces of this many
// tables (512 MiB each with 64 KiB clusters) rather than pulling the whole image's tables through
// the cache at once, which would evict the tables the caller is about to read through.
constexpr unsigned kMaxTablesPerCall = 16;

}  // namespace

Task<Result<BlockStatus>> Qcow2Image::block_status(uint64_t off, uint64_t len) {
  if (closed_) co_return invalid_argument("block-status after close");
  CO_RETURN_IF_ERROR(check_range("block-status", off, len));
  BlockStatus st;
  if (len == 0) co_return st;
  const uint64_t end = off + len;
  // Unallocated clusters read from the backing image up to its end: the run stops there.
  const uint64_t backing_end = backing_ ? backing_->size() : 0;
  auto unallocated_kind = [&](uint64_t at) {
    return at < backing_end ? BlockStatus::Kind::kBacking : BlockStatus::Kind::kUnallocated;
  };
  auto kind_of = [&](ClusterKind kind, uint64_t at) {
    switch (kind) {
      case ClusterKind::kUnallocated:
        return unallocated_kind(at);
      case ClusterKind::kZeroPlain:
      case ClusterKind::kZeroAlloc:
        return BlockStatus::Kind::kZero;
      case ClusterKind::kNormal:
      case ClusterKind::kCompressed:
        break;
    }
    return BlockStatus::Kind::kData;
  };

  bool started = false;
  uint64_t run_end = off;    // guest end of the run found so far
  uint64_t next_host = 0;    // the host offset a run's next cluster must have
  bool run_has_host = false;  // the run lies in host clusters (data, zero- or unallocated-alloc)
  unsigned tables_read = 0;  // allocated L2 tables looked at
  std::vector<RawL2> entries;
  // Takes a piece [at, piece_end) of kind k into the run; false once the run is over.
  auto extend = [&](BlockStatus::Kind k, uint64_t piece_end) {
    if (!started) {
      st.kind = k;
      started = true;
    } else if (k != st.kind) {
      return false;
    }
    run_end = piece_end;
    // Past the backing image's end an unallocated range reads as zeros: a new run.
    return !(k == BlockStatus::Kind::kBacking && run_end >= backing_end);
  };

  uint64_t gc = cluster_index(off);
  const uint64_t last_gc = cluster_index(end - 1);
  bool more = true;
  while (more && gc <= last_gc) {
    const uint64_t n = std::min(l2_entries_ - l2_index(gc), last_gc - gc + 1);
    CO_ASSIGN_OR_RETURN(uint64_t l2_off, l2_offset_from_l1(l1_index(gc)));
    if (l2_off == 0) {
      more =
          extend(unallocated_kind(std::max(off, gc << cluster_bits_)), (gc + n) << cluster_bits_);
      gc += n;
      continue;
    }
    if (started && tables_read == kMaxTablesPerCall) break;
    ++tables_read;
    CO_RETURN_IF_ERROR(co_await lookup(gc, n, entries));
    for (uint64_t k = 0; k < n && more; ++k) {
      const uint64_t cstart = (gc + k) << cluster_bits_;
      CO_ASSIGN_OR_RETURN(L2Entry e, decode_entry(gc + k, entries[k]));
      if (e.kind == ClusterKind::kCompressed) {
        // A compressed cluster is a run of its own.
        if (started) {
          more = false;
          break;
        }
        more = extend(BlockStatus::Kind::kData, cstart + cluster_size_);
        st.compressed = true;
        continue;
      }
      // With extended L2, runs of subclusters of one kind; without it, the cluster.
      for (uint64_t in = off > cstart ? off - cstart : 0; in < cluster_size_ && more;) {
        const unsigned sc = static_cast<unsigned>(in >> sc_bits_);
        const ClusterKind sk = e.sub_kind(sc);
        const uint64_t piece_end = uint64_t{e.sub_run_end(sc)} << sc_bits_;
        const uint64_t host = e.host_offset + in;
        // Whether the piece lies in a host cluster (data, or zeros / unallocated subclusters
        // that keep one: QEMU's ZERO_ALLOC and UNALLOCATED_ALLOC, which qemu-img map shows
        // with their offset).
        const bool has_host = e.has_host_cluster();
        if (started && st.compressed) {
          more = false;
          break;
        }
        // Runs in host clusters are contiguous in the file; they do not mix with runs outside.
        if (started && (has_host != run_has_host || (has_host && host != next_host))) {
          more = false;
          break;
        }
        const bool first = !started;
        more = extend(kind_of(sk, cstart + in), cstart + piece_end);
        if (run_end != cstart + piece_end) {  // a different kind: not taken
          more = false;
          break;
        }
        if (first && has_host) st.host_offset = host;
        if (first) run_has_host = has_host;
        next_host = e.host_offset + piece_end;
        in = piece_end;
      }
    }
    gc += n;
  }
  st.length = std::min(run_end, end) - off;
  // The backing image may end inside a cluster: what lies past its end reads as zeros.
  if (st.kind == BlockStatus::Kind::kBacking) st.length = std::min(st.length, backing_end - off);
  co_return st;
}

}  // namespace img::qcow2
