#include "qcow2/cache.h"

#include <cstring>

namespace img::qcow2 {

TableCache::TableCache(IoLoop& loop, File& file, uint32_t table_size, size_t capacity,
                       const char* what)
    : loop_(loop),
      file_(file),
      table_size_(table_size),
      capacity_(capacity < 2 ? 2 : capacity),
      what_(what) {}

TableCache::~TableCache() = default;

TableCache::Ref::Ref(Entry* e) : e_(e) { ++e_->pins; }
TableCache::Ref& TableCache::Ref::operator=(Ref&& o) noexcept {
  if (this != &o) {
    reset();
    e_ = std::exchange(o.e_, nullptr);
  }
  return *this;
}
void TableCache::Ref::reset() {
  if (e_) {
    --e_->pins;
    e_ = nullptr;
  }
}
uint8_t* TableCache::Ref::data() const { return e_->buf.data(); }
uint64_t TableCache::Ref::offset() const { return e_->offset; }

void TableCache::mark_dirty(const Ref& r) {
  r.e_->dirty = true;
  ++r.e_->dirty_seq;
}

Task<Status> TableCache::set_dependency(TableCache* dep) {
  // Loop until both conditions hold at one instant (no await between the check and the set),
  // so a cycle never exists even with other coroutines setting dependencies meanwhile.
  for (;;) {
    if (dep->depends_) {
      CO_RETURN_IF_ERROR(co_await dep->flush_dependency());
      continue;
    }
    if (depends_ && depends_ != dep) {
      CO_RETURN_IF_ERROR(co_await flush_dependency());
      continue;
    }
    break;
  }
  depends_ = dep;
  ++depends_seq_;
  co_return Status{};
}

bool TableCache::has_dirty() const {
  for (auto& [off, e] : map_) {
    if (e->dirty) return true;
  }
  return false;
}

Status TableCache::drop_all() {
  for (auto& [off, e] : map_) {
    if (e->dirty || e->pins || e->loading || e->writing) {
      return make_error(ErrorCode::kInvalidArgument,
                        strfmt("%s at 0x%llx is in use; cannot drop the cache", what_,
                               (unsigned long long)off));
    }
  }
  map_.clear();
  return {};
}

Task<Status> TableCache::make_room() {
  while (map_.size() >= capacity_) {
    Entry* victim = nullptr;
    for (auto& [off, e] : map_) {
      if (e->pins == 0 && !e->loading && !e->writing && (!victim || e->lru < victim->lru)) {
        victim = e.get();
      }
    }
    if (!victim) co_return Status{};  // everything pinned: grow past capacity for now
    if (victim->dirty) {
      Ref hold(victim);
      // A failed write leaves it dirty and cached; the caller's get fails, as QEMU's does.
      CO_RETURN_IF_ERROR(co_await write_entry(victim));
      // It may have been used (or dirtied) again while we wrote it; look again.
      continue;
    }
    map_.erase(victim->offset);
  }
  co_return Status{};
}

Task<Result<TableCache::Ref>> TableCache::get(uint64_t offset) {
  for (;;) {
    auto it = map_.find(offset);
    if (it != map_.end()) {
      Entry* e = it->second.get();
      if (e->loading) {
        std::shared_ptr<Entry> keep = it->second;  // alive even if a failed load drops it
        Ref hold(e);  // a loaded table is not evicted before we take it
        co_await e->waiters.wait();
        // The loader's error, not a table that was never read.
        if (keep->load_error) co_return Unexpected(*keep->load_error);
        continue;
      }
      e->lru = ++lru_clock_;
      co_return Ref(e);
    }
    CO_RETURN_IF_ERROR(co_await make_room());
    if (map_.count(offset)) continue;  // someone loaded it while we made room
    auto e = std::make_shared<Entry>(loop_, offset);
    e->loading = true;
    e->buf.resize(table_size_);
    map_.emplace(offset, e);
    Ref ref(e.get());
    Status s = co_await file_.read_exact(offset, e->buf.data(), table_size_, what_);
    e->loading = false;
    e->lru = ++lru_clock_;
    e->waiters.notify_all();
    if (!s) {
      // Nothing stays cached: waiters see load_error, the next get reads again. A loading entry
      // is never replaced in the map (get_new waits for it), so the map still holds e.
      ref.reset();
      e->load_error = s.error();
      map_.erase(offset);
      co_return Unexpected(std::move(s).error());
    }
    co_return ref;
  }
}

TableCache::Ref TableCache::renew(Entry* e) {
  e->buf.assign(table_size_, 0);
  e->lru = ++lru_clock_;
  Ref ref(e);
  mark_dirty(ref);
  return ref;
}

Task<Result<TableCache::Ref>> TableCache::get_new(uint64_t offset) {
  for (;;) {
    auto it = map_.find(offset);
    if (it == map_.end()) {
      CO_RETURN_IF_ERROR(co_await make_room());
      if (map_.count(offset)) continue;  // someone loaded it while we made room
      auto e = std::make_shared<Entry>(loop_, offset);
      map_.emplace(offset, e);
      co_return renew(e.get());
    }
    Entry* e = it->second.get();
    if (e->loading) {
      // A stale read of the table that lived here before: it reads into the buffer, so let it
      // finish (or fail and take the entry with it), then look again.
      std::shared_ptr<Entry> keep = it->second;
      Ref hold(e);  // not evicted (and freed) before we look again
      co_await e->waiters.wait();
      continue;
    }
    // A stale copy of a table that lived here before (freed and reallocated): reuse the slot.
    // A write of the old content still in flight finishes before the new one starts.
    co_return renew(e);
  }
}

Task<Status> TableCache::flush_files() {
  if (also_) CO_RETURN_IF_ERROR(co_await also_->flush());
  co_return co_await file_.flush();
}

Task<Status> TableCache::flush_dependency() {
  // Loop until neither condition holds at one instant: the caller snapshots the table with no
  // await after we return, so what it writes was ordered behind everything it depends on.
  // A condition is cleared only after it is met, never before an await, so a concurrent writer
  // cannot take a flush still in flight for one that completed.
  while (depends_ || depends_on_flush_) {
    uint64_t flush_seq = depends_on_flush_seq_;
    if (!depends_) {
      CO_RETURN_IF_ERROR(co_await flush_files());
      if (flush_seq == depends_on_flush_seq_) depends_on_flush_ = false;
      continue;
    }
    uint64_t seq = depends_seq_;
    TableCache* dep = depends_;
    CO_RETURN_IF_ERROR(co_await dep->flush());
    if (dep->needs_sync()) {
      uint64_t n = dep->written_count();
      CO_RETURN_IF_ERROR(co_await flush_files());
      dep->synced_up_to(n);
      if (flush_seq == depends_on_flush_seq_) depends_on_flush_ = false;  // that flush did it
    }
    // A new dependency set while we flushed needs another round.
    if (seq == depends_seq_) depends_ = nullptr;
  }
  co_return Status{};
}

Task<Status> TableCache::write_entry(Entry* e) {
  // REQUIRES: e is pinned.
  for (;;) {
    // One write of a table at a time: two in flight could complete in either order.
    while (e->writing) co_await e->waiters.wait();
    CO_RETURN_IF_ERROR(co_await flush_dependency());
    if (!e->writing) break;  // else someone started a write while we flushed
  }
  if (!e->dirty) co_return Status{};
  // Snapshot now: the dependency holds for exactly this content.
  std::vector<uint8_t> copy = e->buf;
  uint64_t seq = e->dirty_seq;
  e->dirty = false;
  e->writing++;
  Status s = co_await file_.write(e->offset, copy.data(), copy.size());
  e->writing--;
  e->waiters.notify_all();
  if (!s) {
    e->dirty = true;  // written again by the next flush or eviction
    co_return s;
  }
  if (e->dirty_seq != seq) e->dirty = true;
  ++written_;
  co_return Status{};
}

Task<Status> TableCache::flush() {
  // One pass over what is dirty or being written now: tables dirtied after the flush began
  // belong to requests that completed after it, which this flush does not promise to cover.
  std::vector<Ref> list;  // pinned: alive and in the map across the awaits below
  for (auto& [off, e] : map_) {
    if ((e->dirty || e->writing) && !e->loading) list.push_back(Ref(e.get()));
  }
  Status result;
  for (Ref& r : list) {
    Entry* e = r.e_;
    // A write started by someone else (eviction, another flush) must finish before we return.
    while (result && e->writing) co_await e->waiters.wait();
    // A failed write leaves the table dirty; the tables after it stay dirty for the next flush.
    if (result && e->dirty) result = co_await write_entry(e);
  }
  co_return result;
}

}  // namespace img::qcow2
