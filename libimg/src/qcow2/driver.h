// Qcow2Image: the qcow2 BlockDriver: guest reads and writes mapped through L1/L2 tables onto
// host clusters, with allocation, copy-on-write of partial clusters, zero clusters, discard and
// crash-safe metadata ordering. Split by concern over several files:
//   driver.cc        open, header updates, flush, close
//   refcount.cc      refcount access, the cluster allocator, refcount table growth
//   cluster_map.cc   L1/L2 lookup, L2 table allocation, the metadata overlap check
//   rw.cc            read and write
//   zero_discard.cc  write_zeroes, discard
//   block_status.cc  block_status: whole runs of one kind, across L2 tables
//   compressed.cc    compressed clusters: reading (decompression) and write_compressed, with
//                    the codecs (compress.cc) running on a thread pool
//   resize.cc        grow (L1 table growth, preallocation) and shrink
//   snapshot.cc      internal snapshots: create, apply, delete (snapshot_table.cc holds the
//                    table codec, refcount_batch.cc the streaming whole-tree passes)
//   amend.cc         qemu-img amend: compat upgrade/downgrade, lazy refcounts, size;
//                    amend_zero.cc expands zero clusters for a downgrade, amend_refcount.cc
//                    rewrites the refcount structures for another refcount width
//
// Crash safety (qcow2.rst "Host cluster management" and QEMU's ordering): data is written before
// the L2 entry that maps it is updated; refcount increases reach the file before the L2 entries
// that use them (L2 cache depends on the refcount cache); L2 entries are cleared before refcounts
// drop (refcount cache depends on the L2 cache); new L2 tables and refcount blocks are written
// and flushed before the L1 / refcount table entry that points to them. A crash at any point
// leaves leaked clusters at worst.
//
// Concurrency: every request is a coroutine on one IoLoop. A request that misses the L2 cache
// waits for the read without blocking others (TableCache is single-flight); refcount changes and
// allocation run under one AsyncMutex so no cluster is handed out twice; ClusterLocks order
// writers to the same guest cluster.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "img/block_driver.h"
#include "img/image.h"
#include "img/qcow2.h"
#include "qcow2/cache.h"
#include "qcow2/cluster_locks.h"
#include "qcow2/compress.h"
#include "qcow2/format.h"
#include "qcow2/l2_entry.h"
#include "qcow2/layout.h"
#include "qcow2/snapshot_table.h"
#include "util/async.h"
#include "util/iov.h"

namespace img {
class IovCursor;
}

namespace img::qcow2 {

class RefcountBatch;

class Qcow2Image final : public BlockDriver {
 public:
  static Task<Result<std::unique_ptr<BlockDriver>>> open(IoLoop& loop, std::unique_ptr<File> file,
                                                         const OpenOptions& opts);
  ~Qcow2Image() override;

  uint64_t size() const override { return h_.size; }
  bool read_only() const override { return read_only_; }
  const char* format_name() const override { return "qcow2"; }

  Task<Status> readv(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> flush() override;
  Task<Status> discard(uint64_t off, uint64_t len) override;
  Task<Status> write_zeroes(uint64_t off, uint64_t len, WriteZeroesFlags flags) override;
  Task<Result<BlockStatus>> block_status(uint64_t off, uint64_t len) override;
  Task<Status> close() override;
  Task<Status> write_compressed(uint64_t off, const void* buf, uint64_t len) override;
  uint64_t compressed_cluster_size() const override { return cluster_size_; }
  // Version 3 zeroes whole clusters with the zero flag; version 2 has none and writes zero bytes
  // into allocated clusters (and over a backing file), so it promises nothing.
  bool zeroes_without_writing(uint64_t off, uint64_t len) const override {
    const uint64_t end = off + len;
    return h_.version >= 3 && off % cluster_size_ == 0 &&
           (end % cluster_size_ == 0 || end == h_.size);
  }
  Task<Status> resize(uint64_t new_size, const ResizeOptions& opts) override;
  Task<Status> make_empty() override;  // zero_discard.cc
  Task<Status> set_backing_file(const std::string& name, const std::string& format) override;

  const Header& header() const { return h_; }
  BlockDriver* backing() const override { return backing_.get(); }
  void set_backing(std::unique_ptr<BlockDriver> b) { backing_ = std::move(b); }

  // --- snapshot.cc (REQUIRES for the three: no other request in flight) ---
  const std::vector<SnapshotEntry>& snapshots() const { return snapshots_; }
  // Adds a snapshot of the active tables. sn carries name, id (empty: assigned), dates, clock.
  Task<Result<SnapshotEntry>> snapshot_create(SnapshotEntry sn);
  Task<Status> snapshot_apply(size_t index);
  // Read-only: the snapshot's L1 table in place of the current one (snapshot_view.cc).
  Task<Status> load_snapshot_view(const SnapshotSelector& sel);
  Task<Status> snapshot_delete(size_t index);

  // --- amend.cc --- qemu's qcow2_amend_options: the changes in QEMU's order, each one leaving
  // a valid image if the next fails. REQUIRES: no other request in flight.
  Task<Status> amend(const Qcow2AmendOptions& o, const AmendProgress& progress);

  // --- bitmap_edit.cc --- qemu-img bitmap's operations on one persistent bitmap, committed by
  // one header rewrite. REQUIRES: no other request in flight.
  Task<Status> edit_bitmap(const std::string& name, const BitmapEdit& edit);

 private:
  // --- amend.cc ---
  // Writes h (encoded, unknown autoclear bits cleared) as the first cluster and flushes: the
  // commit point of an amend step.
  Task<Status> rewrite_header(Header h);
  // Everything durable, then the dirty bit cleared (qcow2_mark_clean).
  Task<Status> mark_clean();
  Task<Status> downgrade(const AmendProgress& progress);
  // --- amend_zero.cc --- every zero cluster of every L1 table (active and snapshots) becomes
  // one version 2 can say: unallocated without a backing file, else a cluster of zeros.
  Task<Status> expand_zero_clusters(const AmendProgress& progress);
  Task<Result<bool>> has_compressed_clusters();
  // --- amend_refcount.cc --- new refcount blocks and table of width 2^order written to free
  // space, the header switched to them, the old ones left free.
  Task<Status> change_refcount_order(uint32_t order, const AmendProgress& progress);

  Qcow2Image(IoLoop& loop, std::unique_ptr<File> file, Header h, bool read_only);

  // --- driver.cc ---
  Task<Status> load_tables(const OpenOptions& opts);
  Task<Status> write_incompatible_features(uint64_t bits);
  Task<Status> mark_dirty_if_lazy();
  // Before any change of guest data: every persistent bitmap marked in_use (bitmap.h).
  Task<Status>
  mark_bitmaps_before_change();  // lazy_refcounts: set the dirty bit before the first change
  Task<Status> flush_metadata();
  // Writes the dirty L2 tables (and refcount blocks, with_refcounts), flushes the file and
  // records what is durable now, freed clusters that may be reused included.
  Task<Status> sync_l2_tables(bool with_refcounts);
  // Marks the image corrupt (header bit set, no further writes) and returns the error.
  Task<Status> mark_corrupt(std::string why);
  Status check_writable(const char* op) const;

  // --- snapshot.cc ---
  // Writes back and drops both table caches, so whole-tree passes may read and write tables in
  // the file directly.
  Task<Status> quiesce(const char* op);
  // Adds delta to the refcount of every L2 table that l1 names and of every host cluster their
  // entries map (a cluster counts once per L1 table that reaches it, as qcow2 counts them).
  Task<Status> refcount_tree(RefcountBatch& rb, const std::vector<uint64_t>& l1, int64_t delta);
  // Sets OFLAG_COPIED on the active L1 and L2 entries exactly where the refcount (as rb holds
  // it) is 1, writing back what changed; with durable, flushed before it returns.
  Task<Status> fix_copied(RefcountBatch& rb, bool durable);
  // Allocates clusters for and writes an encoded table or L1 copy; returns its offset (0 if
  // empty). Not referenced by anything until a header write commits it.
  Task<Result<uint64_t>> write_new(const std::vector<uint8_t>& bytes);
  // Frees the clusters of [offset, offset + bytes) ranges write_new made that nothing refers to
  // (an operation refused after writing them), with alloc_mu_ held; best effort.
  Task<void> give_back_unreferenced(std::vector<std::pair<uint64_t, uint64_t>> ranges);
  // Writes n header bytes at off, then flushes: the commit point of a snapshot operation.
  Task<Status> commit_header(uint64_t off, const uint8_t* p, size_t n);
  void refresh_metadata_clusters();
  Task<Result<std::vector<uint64_t>>> load_snapshot_l1(const SnapshotEntry& s);
  // Allocation is done through the refcount cache; make it durable and drop the cache before
  // a RefcountBatch reads the blocks.
  Task<Status> settle_refcounts();

  // --- refcount.cc (REQUIRES alloc_mu_ held for everything that changes refcounts) ---
  Task<Result<uint64_t>> refcount_of(uint64_t cluster);
  Task<Status> update_refcounts(uint64_t first_cluster, uint64_t count, int64_t delta);
  Task<Result<uint64_t>> find_free_run(uint64_t n);
  Task<Result<uint64_t>> alloc_clusters(uint64_t n);  // host byte offset of n new clusters
  // Before clusters freed since the last sync are handed out again: the L2 tables that stopped
  // referencing them are written and the file flushed. Otherwise new data lands in a cluster that
  // an L2 entry on disk still maps, and after a crash a discarded guest cluster reads another
  // one's data (with lazy refcounts, both entries could reach the disk).
  Task<Status> sync_before_reuse(uint64_t first_cluster, uint64_t count);
  // Byte-granular space for one compressed cluster (QEMU's qcow2_alloc_bytes): continues in
  // the host cluster at free_byte_offset_, spilling into the next one if that is the next free
  // cluster. Every host cluster the bytes touch gains one reference. REQUIRES 0 < size <= cluster
  // size.
  Task<Result<uint64_t>> alloc_bytes(uint64_t size);
  Task<Status> free_clusters(uint64_t host_off, uint64_t count);
  // The host clusters an entry's data occupies (a compressed one may span two).
  struct HostRun {
    uint64_t first_cluster;
    uint64_t count;
  };
  HostRun host_run_of(const L2Entry& e) const;
  // Drops the refcount of each cluster of r by one; with punch, a cluster whose refcount reaches
  // zero is hole-punched first.
  Task<Status> release_clusters(HostRun r, bool punch);
  Task<Status> create_refblock(uint64_t block_index, uint64_t at_cluster);
  Task<Status> grow_reftable(uint64_t needed_index);
  Status check_refblock_offset(uint64_t block_index, uint64_t off) const;

  // --- cluster_map.cc ---
  // The L2 entries for guest clusters [first, first+count) within one L2 table (zeros if the
  // table does not exist).
  Task<Status> lookup(uint64_t first_cluster, uint64_t count, std::vector<RawL2>& entries);
  // Entry and bitmap of guest cluster gc in its (loaded) L2 table.
  RawL2 l2_at(const uint8_t* table, uint64_t gc) const {
    return load_l2(table, l2_index(gc), l2_entry_bytes_);
  }
  void set_l2_at(uint8_t* table, uint64_t gc, RawL2 v) const {
    store_l2(table, l2_index(gc), l2_entry_bytes_, v);
  }
  // The L2 table for l1_index, allocated if missing (only for writers).
  Task<Result<TableCache::Ref>> get_l2(uint64_t l1_index, bool allocate);
  Task<Status> l2_allocate(uint64_t l1_index);
  // Copy-on-write of an L2 table shared with a snapshot: the active L1 entry gets a copy.
  Task<Status> l2_copy(uint64_t l1_index, uint64_t old_offset);
  // Validates an L1 entry; returns the L2 table offset (0 if none).
  Result<uint64_t> l2_offset_from_l1(uint64_t l1_index) const;
  // Decodes the raw L2 entry of guest cluster gc; an entry the spec forbids is a corruption
  // error that names the guest offset.
  Result<L2Entry> decode_entry(uint64_t gc, RawL2 raw) const;
  Status compressed_not_supported(uint64_t gc) const;
  // True if [off, off+len) touches qcow2 metadata (header, L1, refcount table, refcount
  // blocks, L2 tables): writing guest data there would corrupt the image.
  bool overlaps_metadata(uint64_t off, uint64_t len) const;

  // --- rw.cc ---
  // Reads guest range [off, off+len) of unallocated clusters into cur: from the backing image
  // up to its end, zeros past it (and everywhere without one).
  Task<Status> read_unallocated(uint64_t off, uint64_t len, IovCursor& cur);
  // The guest-visible content of cluster gc (mapped by e) into buf (cluster_size_ bytes): what a
  // partial write leaves in place around the new data.
  Task<Status> read_old_cluster(uint64_t gc, const L2Entry& e, uint8_t* buf);
  // The same for bytes [from, to) of the cluster only, subcluster by subcluster with extended
  // L2 (data, zeros, the backing image), into buf[0, to - from).
  Task<Status> read_old_range(uint64_t gc, const L2Entry& e, uint64_t from, uint64_t to,
                              uint8_t* buf);
  // Whether unallocated guest bytes at off read anything but zeros.
  bool backing_covers(uint64_t off) const { return backing_ && off < backing_->size(); }
  Task<Status> write_allocated(uint64_t off, std::span<const iovec> iov, bool* done);
  Task<Status> write_allocating(uint64_t off, std::span<const iovec> iov);

  // --- compressed.cc ---
  // Decompresses the compressed clusters gc, gc+1, ... (entries, all kCompressed) on the thread
  // pool and copies bytes [in, in+bytes) of their guest data into cur.
  Task<Status> read_compressed(uint64_t gc, std::span<const L2Entry> entries, uint64_t in,
                               uint64_t bytes, IovCursor& cur);
  // Bytes [in, in+len) of compressed cluster gc's guest data into dst (copy-on-write).
  Task<Status> read_compressed_part(uint64_t gc, const L2Entry& e, uint64_t in, uint8_t* dst,
                                    uint64_t len);
  // Decompresses clusters into out (entries.size() clusters).
  Task<Status> decompress_clusters(uint64_t gc, std::span<const L2Entry> entries, uint8_t* out);
  // write_compressed for clusters [gc, gc + ceil(len / cluster)) inside one L2 table.
  Task<Status> write_compressed_run(uint64_t gc, const uint8_t* buf, uint64_t len);
  // Writes packed compressed data. Neighbouring compressed clusters share O_DIRECT blocks, which
  // the file layer completes by read-modify-write: writes that share a block are serialized.
  Task<Status> write_packed(uint64_t off, std::span<const iovec> iov);
  // Packed data leaves the file ending anywhere; as QEMU does after convert -c, the end is
  // rounded up to a 512-byte sector ("to ease reading with sector based I/Os").
  Task<Status> pad_to_sector();

  // --- zero_discard.cc ---
  // full (with discard): every entry becomes unallocated, even over a backing image (make_empty).
  Task<Status> zero_or_discard(uint64_t off, uint64_t len, bool discard, bool may_unmap,
                               bool full = false);
  // Extended L2: subclusters [s0, s1) of guest cluster gc read as zeros (zero bits set,
  // allocation bits cleared). *fallback: a compressed cluster, which has no subclusters.
  Task<Status> zero_subclusters(uint64_t gc, unsigned s0, unsigned s1, bool discard,
                                bool* fallback);

  // --- resize.cc ---
  Task<Status> commit_size(uint64_t new_size);  // flushes, then writes the header's size
  Task<Status> grow_l1(uint64_t entries);       // a larger L1 table, relocated
  Task<Status> zero_partial_tail(uint64_t old_size, uint64_t new_size);
  Task<Status> preallocate(uint64_t from, uint64_t to, Preallocation mode);
  // Over a backing file longer than old: [old, new_size) reads as zeros, not as its data.
  Task<Status> zero_grown_part(uint64_t old, uint64_t new_size, Preallocation mode);
  Task<Status> prepare_prealloc_data(uint64_t host, uint64_t len, uint64_t old_file_end,
                                     Preallocation mode);
  Task<Status> refuse_shrink_over_data(uint64_t new_size);
  Task<Status> shrink(uint64_t new_size, bool allow_data_loss);
  Task<Status> shrink_l1(uint64_t keep);  // frees the L2 tables of entries >= keep
  Task<Status> truncate_unused_tail();

  uint64_t cluster_index(uint64_t guest_off) const { return guest_off >> cluster_bits_; }
  uint64_t l1_index(uint64_t gc) const { return gc >> l2_bits_; }
  uint64_t l2_index(uint64_t gc) const { return gc & (l2_entries_ - 1); }

  // --- data_file.cc --- an external data file (spec: "External data file"): guest data lies
  // in it at the guest offset itself (QEMU maps host == guest there and keeps no refcounts for
  // it); the qcow2 file holds only metadata.
  bool has_data_file() const { return data_file_ != nullptr; }
  File& data_io() { return data_file_ ? *data_file_ : *file_; }
  // data_file_raw: the data file must read as the guest sees the disk, so zeros are written
  // to it, not only recorded in the L2 tables.
  bool data_file_raw() const {
    return has_data_file() && (h_.autoclear_features & kAutoclearDataFileRaw);
  }
  Task<Status> open_data_file(const OpenOptions& opts);
  // Host clusters [host, host + len) of the data file are no longer used: punched, as QEMU's
  // discard passes through (zeroed in raw mode, so the raw view still reads what the guest does).
  Task<Status> release_data(uint64_t host, uint64_t len);
  Unexpected no_data_file_support(const char* what) const;

  IoLoop& loop_;
  std::unique_ptr<File> file_;
  std::unique_ptr<File> data_file_;       // nullptr: data lives in file_
  std::unique_ptr<BlockDriver> backing_;  // read-only; destroyed after the caches below
  Header h_;
  bool read_only_;
  bool corrupt_ = false;
  bool closed_ = false;
  bool lazy_ = false;
  bool dirty_on_disk_ = false;

  uint32_t cluster_bits_;
  uint64_t cluster_size_;
  uint32_t l2_bits_;
  uint64_t l2_entries_;
  uint64_t refblock_entries_;
  uint32_t refcount_order_;
  // Extended L2 (spec: "Extended L2 Entries"): 16-byte entries, 32 subclusters a cluster.
  // Without it a cluster is its own single subcluster (sc_bits_ == cluster_bits_).
  bool extended_ = false;
  uint64_t l2_entry_bytes_ = 8;
  uint32_t sc_bits_;
  uint64_t sc_size_;

  std::vector<uint64_t> l1_;        // host-endian copy of the L1 table
  std::vector<uint64_t> reftable_;  // host-endian copy of the refcount table
  std::unique_ptr<TableCache> l2_cache_;
  std::unique_ptr<TableCache> refcount_cache_;
  AsyncMutex alloc_mu_;
  AsyncMutex header_mu_;
  AsyncMutex dirty_mu_;  // one writer sets the dirty bit; the others wait until it is on disk
  AsyncMutex bitmap_mu_;           // one writer marks the bitmaps in_use; the others wait for it
  bool bitmaps_unmarked_ = false;  // bitmaps that must be marked in_use before guest data changes
  ClusterLocks cluster_locks_;
  uint64_t free_cluster_index_ = 0;
  // Host clusters whose refcount dropped to 0 since the L2 tables were last written and synced.
  std::unordered_set<uint64_t> freed_unsynced_;
  // Where the next compressed cluster's bytes go (inside a host cluster that compressed data
  // already uses), or 0 to start a new host cluster.
  uint64_t free_byte_offset_ = 0;
  bool wrote_compressed_ = false;
  // Packed compressed writes in flight, as [first block, last block] of kPackedBlock bytes.
  std::vector<std::pair<uint64_t, uint64_t>> packed_in_flight_;
  WaitList packed_done_{loop_};
  // L2 tables being allocated, per L1 index: later writers wait instead of allocating twice.
  std::unordered_map<uint64_t, std::unique_ptr<WaitList>> l2_allocating_;
  // The snapshot table (snapshot_table.h) and its length in bytes.
  std::vector<SnapshotEntry> snapshots_;
  uint64_t snapshots_size_ = 0;
  // Host clusters holding refcount blocks, L2 tables, snapshot L1 tables and the snapshot
  // table (for the overlap check).
  std::unordered_set<uint64_t> metadata_clusters_;
};

}  // namespace img::qcow2
