// In-memory files for tests and fuzzers.
//
// MemFile: a File held in a byte vector.
// FaultFile: a MemFile that remembers which writes were not yet flushed, so a test can simulate a
// crash (drop all of them, or keep a random subset, as a disk with a volatile cache may) and can
// make the Nth write fail. Modelled on leveldb's fault_injection_test. For tests of concurrent code
// it can also fail reads and flushes, and hold operations so a test completes them in any order.
//
// Thread-safety: none; one IoLoop thread.
#pragma once

#include <coroutine>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "img/file.h"

namespace img {

class MemFile : public File {
 public:
  explicit MemFile(IoLoop* loop = nullptr, std::string name = "<memory>")
      : loop_(loop), name_(std::move(name)) {}

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> flush() override;
  Task<Status> discard(uint64_t off, uint64_t len) override;
  Task<Status> write_zeroes(uint64_t off, uint64_t len) override;
  Task<Status> allocate(uint64_t off, uint64_t len) override;
  Task<Status> truncate(uint64_t size) override;
  Result<uint64_t> size() override { return data_.size(); }
  bool read_only() const override { return read_only_; }
  const std::string& name() const override { return name_; }

  void set_read_only(bool ro) { read_only_ = ro; }
  std::vector<uint8_t>& bytes() { return data_; }
  const std::vector<uint8_t>& bytes() const { return data_; }

 protected:
  Task<void> maybe_yield();
  void put(uint64_t off, const uint8_t* p, uint64_t n);
  void zero(uint64_t off, uint64_t n);  // within or growing the file

  IoLoop* loop_;
  std::string name_;
  std::vector<uint8_t> data_;
  bool read_only_ = false;
};

class FaultFile : public MemFile {
 public:
  explicit FaultFile(IoLoop* loop = nullptr, std::string name = "<fault>")
      : MemFile(loop, std::move(name)) {}

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override;
  Task<Status> flush() override;
  Task<Status> discard(uint64_t off, uint64_t len) override;
  Task<Status> write_zeroes(uint64_t off, uint64_t len) override;
  Task<Status> allocate(uint64_t off, uint64_t len) override;
  Task<Status> truncate(uint64_t size) override;

  // Reads numbered [first, first+count) (0-based, counted from now) fail with EIO. A failed read
  // changes nothing, so the reads after the window succeed: a transient media error.
  void fail_reads(uint64_t first, uint64_t count = 1) {
    read_fail_from_ = reads_seen_ + first;
    read_fail_until_ = read_fail_from_ + count;
  }
  uint64_t reads_seen() const { return reads_seen_; }
  // Flushes numbered [first, first+count) from now fail with EIO and make nothing durable.
  void fail_flushes(uint64_t first, uint64_t count = 1) {
    flush_fail_from_ = flushes_seen_ + first;
    flush_fail_until_ = flush_fail_from_ + count;
  }
  uint64_t flushes_done() const { return flushes_done_; }  // flushes that succeeded
  // The disk recovered from an injected failure: nothing fails any more, flush included.
  void recover() {
    stop_failing();
    failed_ = false;
    read_fail_from_ = read_fail_until_ = 0;
    flush_fail_from_ = flush_fail_until_ = 0;
  }
  // Called as each write is issued (not failed), before it takes effect: a test checks an
  // ordering rule ("this table only after that flush") at the moment the write is made.
  std::function<void(uint64_t off, uint64_t len)> on_write;
  // Writes issued and not yet completed.
  size_t writes_in_flight() const { return writes_in_flight_; }
  // While held, each read, write and flush waits after it is issued, before it takes effect,
  // until the test releases it; releasing out of issue order completes I/O out of order, as a
  // real disk may. REQUIRES: the file has a loop.
  void hold_io(bool on) { hold_ = on; }
  size_t held() const { return held_.size(); }
  // Lets held operation i (0 = the oldest still held) proceed at the loop's next turn.
  void release_held(size_t i);
  void release_all_held();

  // Crash: the file becomes what was durable at the last flush.
  void crash_drop_unflushed();
  // Crash: the durable state plus a random subset of the unflushed operations, applied in order.
  void crash_keep_random_subset(std::mt19937_64& rng);
  // Every mutating operation numbered >= n (0-based, counted from now) fails with EIO, as does
  // flush once one has failed.
  void fail_from_op(uint64_t n) { fail_from_ = ops_seen_ + n; }
  void stop_failing() { fail_from_ = UINT64_MAX; }
  // Operations (writes, discards, ...) not yet made durable by a flush.
  size_t unflushed_ops() const { return pending_.size(); }
  uint64_t mutating_ops_seen() const { return ops_seen_; }
  // What a crash now (dropping every unflushed operation) would leave.
  const std::vector<uint8_t>& durable_bytes() const { return durable_; }

 private:
  struct Op {
    enum Kind { kWrite, kZero, kTruncate } kind;
    uint64_t off;
    uint64_t len;
    std::vector<uint8_t> bytes;
  };
  bool should_fail();
  Task<void> gate();
  static void apply(std::vector<uint8_t>& d, const Op& op);

  std::vector<uint8_t> durable_;
  std::vector<Op> pending_;
  uint64_t ops_seen_ = 0;
  uint64_t fail_from_ = UINT64_MAX;
  bool failed_ = false;
  uint64_t reads_seen_ = 0, read_fail_from_ = 0, read_fail_until_ = 0;
  uint64_t flushes_seen_ = 0, flush_fail_from_ = 0, flush_fail_until_ = 0;
  uint64_t flushes_done_ = 0;
  size_t writes_in_flight_ = 0;
  bool hold_ = false;
  std::vector<std::coroutine_handle<>> held_;
};

}  // namespace img
