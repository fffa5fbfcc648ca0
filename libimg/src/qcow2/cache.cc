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

Task<Status> TableCache::make_room() {
  while (map_.size() >= capacity_) {
    Entry* victim = nullptr;
    for (auto& [off, e] : map_) {
      if (e->pins == 0 && !e->loading && (!victim || e->lru < victim->lru)) victim = e.get();
    }
    if (!victim) co_return Status{};  // everything pinned: grow past capacity for now
    if (victim->dirty) {
      victim->pins++;
      Status s = co_await write_entry(victim);
      victim->pins--;
      CO_RETURN_IF_ERROR(s);
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
        Ref hold(e);  // keep it from being evicted while we wait
        co_await e->waiters.wait();
        hold.reset();
        continue;  // re-look: the load may have failed and removed it
      }
      e->lru = ++lru_clock_;
      co_return Ref(e);
    }
    CO_RETURN_IF_ERROR(co_await make_room());
    if (map_.count(offset)) continue;  // someone loaded it while we made room
    auto owned = std::make_unique<Entry>(loop_, offset);
    Entry* e = owned.get();
    e->cache = this;
    e->loading = true;
    e->buf.resize(table_size_);
    map_.emplace(offset, std::move(owned));
    Ref ref(e);
    Status s = co_await file_.read_exact(offset, e->buf.data(), table_size_, what_);
    e->loading = false;
    e->lru = ++lru_clock_;
    e->waiters.notify_all();
    if (!s) {
      ref.reset();
      if (e->pins == 0) map_.erase(offset);
      co_return Unexpected(std::move(s).error());
    }
    co_return ref;
  }
}

Task<Result<TableCache::Ref>> TableCache::get_new(uint64_t offset) {
  auto it = map_.find(offset);
  if (it == map_.end()) {
    CO_RETURN_IF_ERROR(co_await make_room());
    it = map_.find(offset);
  }
  Entry* e;
  if (it != map_.end()) {
    // A stale copy of a table that lived here before (freed and reallocated): reuse the slot.
    e = it->second.get();
    while (e->loading) co_await e->waiters.wait();
  } else {
    auto owned = std::make_unique<Entry>(loop_, offset);
    e = owned.get();
    e->cache = this;
    map_.emplace(offset, std::move(owned));
  }
  e->buf.assign(table_size_, 0);
  e->lru = ++lru_clock_;
  Ref ref(e);
  mark_dirty(ref);
  co_return ref;
}

Task<Status> TableCache::flush_dependency() {
  // Loop until neither condition holds at one instant: the caller snapshots the table with no
  // await after we return, so what it writes was ordered behind everything it depends on.
  while (depends_ || depends_on_flush_) {
    if (!depends_) {
      depends_on_flush_ = false;
      Status s = co_await file_.flush();
      if (!s) {
        depends_on_flush_ = true;
        co_return s;
      }
      continue;
    }
    uint64_t seq = depends_seq_;
    TableCache* dep = depends_;
    CO_RETURN_IF_ERROR(co_await dep->flush());
    if (dep->needs_sync()) {
      uint64_t n = dep->written_count();
      CO_RETURN_IF_ERROR(co_await file_.flush());
      dep->synced_up_to(n);
    }
    // A new dependency set while we flushed needs another round.
    if (seq == depends_seq_) depends_ = nullptr;
  }
  co_return Status{};
}

Task<Status> TableCache::write_entry(Entry* e) {
  CO_RETURN_IF_ERROR(co_await flush_dependency());
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
    e->dirty = true;
    co_return s;
  }
  if (e->dirty_seq != seq) e->dirty = true;
  ++written_;
  co_return Status{};
}

Task<Status> TableCache::flush() {
  // One pass over what is dirty or being written now: tables dirtied after the flush began
  // belong to requests that completed after it, which this flush does not promise to cover.
  std::vector<Entry*> list;
  for (auto& [off, e] : map_) {
    if ((e->dirty || e->writing) && !e->loading) {
      e->pins++;  // keep every listed entry alive across the awaits below
      list.push_back(e.get());
    }
  }
  Status result;
  for (Entry* e : list) {
    // A write started by someone else (eviction, another flush) must finish before we return.
    while (result && e->writing) co_await e->waiters.wait();
    if (result && e->dirty) result = co_await write_entry(e);
  }
  for (Entry* e : list) e->pins--;
  co_return result;
}

}  // namespace img::qcow2
