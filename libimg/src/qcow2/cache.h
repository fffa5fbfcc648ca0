// TableCache: a write-back cache of cluster-sized metadata tables (L2 tables, refcount blocks),
// keyed by their host offset.
//
// - Single-flight: concurrent misses on one table share a single read. If it fails, every
//   waiter gets the error and nothing stays cached, so the next get reads again.
// - Pinning: a Ref keeps its table in memory; the cache never evicts a pinned, loading or
//   writing table.
// - Write-back: a table whose write fails (eviction or flush) stays dirty and is written again
//   by the next flush or eviction. Writes of one table never overlap: a disk may complete two
//   writes of one offset in either order.
// - Ordering: set_dependency(dep) says "before any dirty table of this cache reaches the file,
//   every dirty table of dep must be written and the file flushed". The L2 cache depends on the
//   refcount cache after an allocation (refcount before the reference); the refcount cache
//   depends on the L2 cache after a free (the reference gone before the refcount drops).
//   This is QEMU's qcow2_cache_set_dependency scheme: order without a flush per write.
// - Tables are written from a snapshot copy taken when their dependencies are satisfied, so a
//   change made while the write is in flight cannot reach the file ahead of its dependency.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "img/file.h"
#include "img/io_loop.h"
#include "util/async.h"

namespace img::qcow2 {

class TableCache {
  struct Entry;

 public:
  TableCache(IoLoop& loop, File& file, uint32_t table_size, size_t capacity, const char* what);
  ~TableCache();

  // A pinned table. Move-only; unpins when destroyed.
  class Ref {
   public:
    Ref() = default;
    Ref(Ref&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    Ref& operator=(Ref&& o) noexcept;
    ~Ref() { reset(); }
    void reset();
    uint8_t* data() const;
    uint64_t offset() const;
    explicit operator bool() const { return e_ != nullptr; }

   private:
    friend class TableCache;
    explicit Ref(Entry* e);
    Entry* e_ = nullptr;
  };

  // The table at host offset, read from the file if not cached.
  Task<Result<Ref>> get(uint64_t offset);
  // A table just allocated at offset: all zeros, dirty, not read from the file.
  Task<Result<Ref>> get_new(uint64_t offset);
  void mark_dirty(const Ref& r);
  // As QEMU's qcow2_cache_set_dependency: a dependency of dep, or a different dependency of this
  // cache, is flushed first, so dependencies never form a cycle.
  Task<Status> set_dependency(TableCache* dep);
  // As QEMU's qcow2_cache_depends_on_flush: the file is flushed before any dirty table of this
  // cache is next written. The L2 cache needs it after a write whose data must be durable before
  // the L2 entry that maps it (a cluster written whole, its head and tail filled in).
  void set_depends_on_flush() {
    depends_on_flush_ = true;
    ++depends_on_flush_seq_;
  }

  // Another file whose writes the tables depend on (an external data file): every flush this
  // cache makes for an ordering flushes it first.
  void flush_also(File* f) { also_ = f; }

  // Writes every dirty table (after its dependency); does not flush the file.
  Task<Status> flush();
  bool has_dirty() const;
  // Forgets every table, so the next get reads the file again: for whole-image passes that
  // rewrite tables in the file directly (snapshots). Fails, keeping everything, if a table is
  // dirty, pinned, loading or being written.
  Status drop_all();
  // Tables written by this cache are counted; a caller that flushed the file after reading
  // written_count() reports it back, so needs_sync() knows what is durable.
  uint64_t written_count() const { return written_; }
  void synced_up_to(uint64_t n) { synced_ = std::max(synced_, n); }
  bool needs_sync() const { return written_ > synced_; }

  size_t capacity() const { return capacity_; }
  size_t cached() const { return map_.size(); }
  uint32_t table_size() const { return table_size_; }

 private:
  struct Entry {
    Entry(IoLoop& loop, uint64_t off) : offset(off), waiters(loop) {}
    uint64_t offset;
    std::vector<uint8_t> buf;
    int pins = 0;
    bool loading = false;
    bool dirty = false;
    uint64_t dirty_seq = 0;  // bumped on every mark_dirty
    uint64_t lru = 0;
    int writing = 0;  // writes of this table in flight (0 or 1)
    // Set when the load failed: the entry has left the map, and its waiters report this.
    std::optional<Error> load_error;
    WaitList waiters;  // woken when a load or a write of this table ends
  };

  Task<Status> flush_dependency();
  Task<Status> write_entry(Entry* e);
  // e's table made all zeros and dirty, pinned for the caller of get_new.
  Ref renew(Entry* e);
  Task<Status> make_room();

  IoLoop& loop_;
  File& file_;
  uint32_t table_size_;
  size_t capacity_;
  const char* what_;
  // Shared so that a coroutine waiting on an entry keeps it alive even if a failed load removes
  // it from the map meanwhile; a Ref (a pin) is only ever taken on an entry in the map.
  std::unordered_map<uint64_t, std::shared_ptr<Entry>> map_;
  uint64_t lru_clock_ = 0;
  TableCache* depends_ = nullptr;
  uint64_t depends_seq_ = 0;
  File* also_ = nullptr;
  Task<Status> flush_files();
  bool depends_on_flush_ = false;
  uint64_t depends_on_flush_seq_ = 0;  // bumped by every set_depends_on_flush
  uint64_t written_ = 0;
  uint64_t synced_ = 0;
};

}  // namespace img::qcow2
