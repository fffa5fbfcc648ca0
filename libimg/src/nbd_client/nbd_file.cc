#include "nbd_client/nbd_file.h"

#include <libnbd.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <vector>

#include "img/block_driver.h"
#include "nbd_client/nbd_uri.h"

namespace img::nbd_client {
namespace {

// The NBD spec lets a server refuse requests above 32 MiB unless it advertises a larger maximum
// (proto.md, "Block size constraints"); libnbd refuses above 64 MiB itself.
constexpr uint64_t kDefaultMaxRequest = 32u << 20;
// NBD_CMD_BLOCK_STATUS takes a 32-bit length.
constexpr uint64_t kMaxStatusQuery = 0xffff0000u;
// A server that accepts but never answers the handshake.
constexpr int kConnectTimeoutMs = 30000;

Unexpected nbd_error(const std::string& what) {
  int e = nbd_get_errno();
  const char* msg = nbd_get_error();
  return make_error(ErrorCode::kIo, what + ": " + (msg ? msg : std::strerror(e ? e : EIO)),
                    e ? e : EIO);
}

// The libnbd handle and the two coroutines that move bytes for it. Shared with those coroutines,
// so it outlives the File until they have returned.
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(IoLoop& loop, nbd_handle* h) : loop_(loop), h_(h) {}
  ~Conn() { nbd_close(h_); }
  nbd_handle* h() const { return h_; }
  IoLoop& loop() const { return loop_; }

  // After any call that may have queued bytes or requests: starts a reader while replies are
  // owed and a writer while libnbd has bytes it could not send (nbd_aio_get_direction).
  void kick() {
    unsigned dir = nbd_aio_get_direction(h_);
    if ((dir & LIBNBD_AIO_DIRECTION_READ) && nbd_aio_in_flight(h_) > 0 && !reading_) {
      reading_ = true;
      loop_.spawn(pump(shared_from_this(), false));
    }
    if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && !writing_) {
      writing_ = true;
      loop_.spawn(pump(shared_from_this(), true));
    }
  }

 private:
  static Task<void> pump(std::shared_ptr<Conn> c, bool write) {
    const unsigned want = write ? LIBNBD_AIO_DIRECTION_WRITE : LIBNBD_AIO_DIRECTION_READ;
    for (;;) {
      unsigned dir = nbd_aio_get_direction(c->h_);
      if (!(dir & want) || (!write && nbd_aio_in_flight(c->h_) <= 0)) break;
      int fd = nbd_aio_get_fd(c->h_);
      if (fd < 0) break;
      int ready = co_await c->loop_.poll(fd, write ? POLLOUT : POLLIN);
      (void)ready;  // POLLHUP / POLLERR too: libnbd sees the error when it reads or writes
      // A dead connection fails every command in flight through its completion callback.
      if (write) {
        nbd_aio_notify_write(c->h_);
      } else {
        nbd_aio_notify_read(c->h_);
      }
      if (nbd_aio_is_dead(c->h_) || nbd_aio_is_closed(c->h_)) break;
      // The other direction may be wanted now (a reply read can let a queued request go);
      // this one's flag is still set, so kick starts no second copy of this pump.
      c->kick();
    }
    (write ? c->writing_ : c->reading_) = false;
  }

  IoLoop& loop_;
  nbd_handle* h_;
  bool reading_ = false, writing_ = false;
};

// One NBD command in flight, awaited by the coroutine that issued it.
struct Op {
  IoLoop* loop = nullptr;
  bool done = false;
  int err = 0;
  std::coroutine_handle<> waiter;

  nbd_completion_callback callback() { return {.callback = &Op::complete, .user_data = this}; }
  // Runs inside libnbd: never resume inline (the waiter would re-enter the handle).
  static int complete(void* ud, int* error) {
    auto* op = static_cast<Op*>(ud);
    op->done = true;
    op->err = *error;
    if (op->waiter) op->loop->post(op->waiter);
    return 1;  // retire the command
  }
  bool await_ready() const noexcept { return done; }
  void await_suspend(std::coroutine_handle<> h) { waiter = h; }
  int await_resume() const noexcept { return err; }
};

class NbdFile final : public File {
 public:
  NbdFile(std::shared_ptr<Conn> c, std::string name, bool read_only)
      : c_(std::move(c)), name_(std::move(name)), read_only_(read_only) {
    nbd_handle* h = c_->h();
    size_ = static_cast<uint64_t>(nbd_get_size(h));
    can_flush_ = nbd_can_flush(h) == 1;
    can_zero_ = nbd_can_zero(h) == 1;
    can_trim_ = nbd_can_trim(h) == 1;
    has_allocation_ = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    max_request_ = max > 0 ? std::min<uint64_t>(max, kDefaultMaxRequest) : kDefaultMaxRequest;
  }
  ~NbdFile() override {
    // Tell the server we are going (NBD_CMD_DISC) when nothing is owed; closing the socket is
    // what matters either way.
    if (nbd_aio_is_ready(c_->h())) nbd_aio_disconnect(c_->h(), 0);
  }

  Task<Result<uint64_t>> readv(uint64_t off, std::span<const iovec> iov) override {
    const uint64_t total = iov_length(iov);
    const uint64_t have = off >= size_ ? 0 : std::min(total, size_ - off);
    std::deque<Op> ops;  // stable addresses: libnbd holds them
    uint64_t pos = off;
    for (const iovec& v : iov) {
      auto* base = static_cast<uint8_t*>(v.iov_base);
      for (uint64_t done = 0; done < v.iov_len;) {
        uint64_t n = std::min<uint64_t>(v.iov_len - done, max_request_);
        uint64_t in = pos >= off + have ? 0 : std::min(n, off + have - pos);
        if (in < n) std::memset(base + done + in, 0, n - in);  // past the export's end
        if (in > 0) {
          ops.emplace_back().loop = &c_->loop();
          if (nbd_aio_pread(c_->h(), base + done, in, pos, ops.back().callback(), 0) < 0) {
            ops.pop_back();
            co_await wait_all(ops);
            co_return nbd_error(where("read", pos));
          }
        }
        done += n;
        pos += n;
      }
    }
    CO_RETURN_IF_ERROR(co_await finish(ops, "read", off));
    co_return have;
  }

  Task<Status> writev(uint64_t off, std::span<const iovec> iov) override {
    CO_RETURN_IF_ERROR(check_write("write", off, iov_length(iov)));
    std::deque<Op> ops;
    uint64_t pos = off;
    for (const iovec& v : iov) {
      const auto* base = static_cast<const uint8_t*>(v.iov_base);
      for (uint64_t done = 0; done < v.iov_len;) {
        uint64_t n = std::min<uint64_t>(v.iov_len - done, max_request_);
        ops.emplace_back().loop = &c_->loop();
        if (nbd_aio_pwrite(c_->h(), base + done, n, pos, ops.back().callback(), 0) < 0) {
          ops.pop_back();
          co_await wait_all(ops);
          co_return nbd_error(where("write", pos));
        }
        done += n;
        pos += n;
      }
    }
    co_return co_await finish(ops, "write", off);
  }

  Task<Status> flush() override {
    if (read_only_ || !can_flush_)
      co_return Status{};  // nothing to make durable, or the
                           // server writes through (no FLUSH flag)
    std::deque<Op> ops(1);
    ops[0].loop = &c_->loop();
    if (nbd_aio_flush(c_->h(), ops[0].callback(), 0) < 0) co_return nbd_error(name_ + ": flush");
    co_return co_await finish(ops, "flush", 0);
  }

  // File's discard promises zeros afterwards, which NBD_CMD_TRIM does not: a WRITE_ZEROES
  // without NO_HOLE lets the server deallocate and still read zeros (proto.md).
  Task<Status> discard(uint64_t off, uint64_t len) override {
    co_return co_await zero(off, len, /*may_punch=*/true);
  }
  // NBD_CMD_TRIM when the server takes it (NBD_FLAG_SEND_TRIM); else nothing, as qemu's block
  // layer drops a discard the driver cannot send (a trim is only a hint).
  Task<Status> trim(uint64_t off, uint64_t len) override;
  // NO_HOLE: the range stays allocated, as a host file's FALLOC_FL_ZERO_RANGE leaves it
  // (a driver that may free it calls discard; the raw driver does for may_unmap).
  Task<Status> write_zeroes(uint64_t off, uint64_t len) override {
    co_return co_await zero(off, len, /*may_punch=*/false);
  }
  Task<Status> allocate(uint64_t off, uint64_t len) override {
    // The export's space is the server's business; only its size is fixed.
    co_return check_write("allocate", off, len);
  }
  Task<Status> truncate(uint64_t size) override {
    if (size == size_) co_return Status{};
    co_return not_supported(name_ + ": an NBD export cannot change its size");
  }
  Result<uint64_t> size() override { return size_; }
  Result<uint64_t> allocated_size() override {
    return not_supported(name_ + ": the space an NBD export takes is unknown");
  }
  bool read_only() const override { return read_only_; }
  const std::string& name() const override { return name_; }

  Result<Extent> extent_at(uint64_t /*off*/, uint64_t len) override { return Extent{true, len}; }
  Task<Result<Extent>> extent(uint64_t off, uint64_t len) override;

 private:
  std::string where(const char* op, uint64_t off) const {
    return strfmt("%s: %s at offset %llu", name_.c_str(), op, (unsigned long long)off);
  }
  Status check_write(const char* op, uint64_t off, uint64_t len) const {
    if (read_only_) return read_only_error(name_ + ": " + op + ": the export is open read-only");
    if (off > size_ || len > size_ - off) {
      return no_space(strfmt("%s: %s of %llu bytes at offset %llu is past the export's end (%llu)",
                             name_.c_str(), op, (unsigned long long)len, (unsigned long long)off,
                             (unsigned long long)size_));
    }
    return Status{};
  }
  // Waits for every op (the buffers they point to live in the caller's frame).
  Task<void> wait_all(std::deque<Op>& ops) {
    c_->kick();
    for (Op& op : ops) co_await op;
  }
  Task<Status> finish(std::deque<Op>& ops, const char* op, uint64_t off) {
    co_await wait_all(ops);
    for (const Op& o : ops) {
      if (o.err != 0) co_return io_error(o.err, where(op, off));
    }
    co_return Status{};
  }
  Task<Status> zero(uint64_t off, uint64_t len, bool may_punch);
  // Issues [off, off+len) as commands of at most 2 GiB each (issue(length, offset, op) starts
  // one, < 0 on failure) and waits for them all.
  Task<Status> in_pieces(const char* what, uint64_t off, uint64_t len,
                         const std::function<int64_t(uint64_t, uint64_t, Op&)>& issue);

  std::shared_ptr<Conn> c_;
  std::string name_;
  bool read_only_;
  uint64_t size_ = 0;
  bool can_flush_ = false, can_zero_ = false, can_trim_ = false, has_allocation_ = false;
  uint64_t max_request_ = kDefaultMaxRequest;
};

Task<Status> NbdFile::zero(uint64_t off, uint64_t len, bool may_punch) {
  CO_RETURN_IF_ERROR(check_write("write-zeroes", off, len));
  if (!can_zero_) {
    // No NBD_FLAG_SEND_WRITE_ZEROES: write the zeros (qemu's bdrv_co_do_pwrite_zeroes fallback).
    std::vector<uint8_t> zeros(std::min<uint64_t>(len, 1 << 20), 0);
    for (uint64_t p = off; p < off + len; p += zeros.size()) {
      uint64_t n = std::min<uint64_t>(zeros.size(), off + len - p);
      CO_RETURN_IF_ERROR(co_await write(p, zeros.data(), n));
    }
    co_return Status{};
  }
  const uint32_t flags = may_punch ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
  co_return co_await in_pieces("write-zeroes", off, len, [&](uint64_t n, uint64_t p, Op& op) {
    return nbd_aio_zero(c_->h(), n, p, op.callback(), flags);
  });
}

Task<Status> NbdFile::in_pieces(const char* what, uint64_t off, uint64_t len,
                                const std::function<int64_t(uint64_t, uint64_t, Op&)>& issue) {
  // WRITE_ZEROES and TRIM carry no payload, but their length is 32 bits.
  std::deque<Op> ops;
  for (uint64_t p = off; p < off + len;) {
    uint64_t n = std::min<uint64_t>(off + len - p, 0x80000000u);
    ops.emplace_back().loop = &c_->loop();
    if (issue(n, p, ops.back()) < 0) {
      ops.pop_back();
      co_await wait_all(ops);
      co_return nbd_error(where(what, p));
    }
    p += n;
  }
  co_return co_await finish(ops, what, off);
}

Task<Status> NbdFile::trim(uint64_t off, uint64_t len) {
  CO_RETURN_IF_ERROR(check_write("trim", off, len));
  if (!can_trim_ || len == 0) co_return Status{};
  co_return co_await in_pieces("trim", off, len, [&](uint64_t n, uint64_t p, Op& op) {
    return nbd_aio_trim(c_->h(), n, p, op.callback(), 0);
  });
}

// NBD_CMD_BLOCK_STATUS in base:allocation (proto.md, "Metadata querying"): NBD_STATE_HOLE is not
// data, NBD_STATE_ZERO reads as zeros (which is all a copy needs to skip it), and both may come
// alone: a hole that reads as garbage, data that reads as zeros (qemu-img map: data true, zero
// true).
Task<Result<File::Extent>> NbdFile::extent(uint64_t off, uint64_t len) {
  if (!has_allocation_ || off >= size_ || len == 0) co_return Extent{true, len};
  len = std::min({len, size_ - off, kMaxStatusQuery});
  struct Answer {
    bool got = false;
    uint32_t length = 0, flags = 0;
  } ans;
  auto on_extents = [](void* ud, const char* ctx, uint64_t /*offset*/, uint32_t* entries, size_t nr,
                       int* /*error*/) -> int {
    auto* a = static_cast<Answer*>(ud);
    if (!a->got && nr >= 2 && std::strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0) {
      a->got = true;
      a->length = entries[0];
      a->flags = entries[1];
    }
    return 0;
  };
  std::deque<Op> ops(1);
  ops[0].loop = &c_->loop();
  nbd_extent_callback ecb{.callback = on_extents, .user_data = &ans};
  if (nbd_aio_block_status(c_->h(), len, off, ecb, ops[0].callback(), 0) < 0) {
    co_return nbd_error(where("block-status", off));
  }
  CO_RETURN_IF_ERROR(co_await finish(ops, "block-status", off));
  // A server that answered nothing useful, or with zero length, is taken as data.
  if (!ans.got || ans.length == 0) co_return Extent{true, len};
  const bool hole = ans.flags & LIBNBD_STATE_HOLE, zero = ans.flags & LIBNBD_STATE_ZERO;
  const uint64_t n = std::min<uint64_t>(ans.length, len);
  // A hole that does not read as zeros must be read like data.
  if (hole && !zero) co_return Extent{true, n};
  co_return Extent{!hole, n, zero};
}

// A failed connect in qemu's words (its messages come from the socket layer, util/qemu-sockets.c):
// "Failed to connect to 'ADDRESS': REASON" for a refused or missing server, "address resolution
// failed for HOST:PORT: REASON" for a name that does not resolve, "Requested export not
// available" for a name the server does not serve. The text is the whole reason, so the error
// carries no errno (a tool would print strerror alone otherwise).
Unexpected connect_error(nbd_handle* h, const NbdTarget& t) {
  const int err = nbd_get_errno();
  const std::string msg = nbd_get_error() ? nbd_get_error() : "";
  std::string text;
  if (msg.find("getaddrinfo:") != std::string::npos) {
    size_t colon = msg.rfind(": ");
    text = "address resolution failed for " + t.address + ": " + msg.substr(colon + 2);
  } else if (err != 0 && msg.find(": connect: ") != std::string::npos) {
    text = "Failed to connect to '" + t.address + "': " + std::strerror(err);
  } else if (size_t hs = msg.find("handshake: "); hs != std::string::npos) {
    // qemu: "Requested export not available" and the server's own message on a second line;
    // libnbd keeps the server's message to itself, so its own account follows instead.
    std::string why = msg.substr(hs + 11);
    if (size_t tail = why.rfind(": "); tail != std::string::npos && err != 0) why.resize(tail);
    text = err == ENOENT ? "Requested export not available: " + why
                         : "Could not connect to " + t.display + ": " + why;
  }
  if (text.empty()) {
    auto e = nbd_error("Could not connect to " + t.display);
    nbd_close(h);
    return e;
  }
  nbd_close(h);
  return make_error(ErrorCode::kIo, text);
}

}  // namespace

Result<std::unique_ptr<File>> open_nbd_file(IoLoop& loop, const std::string& path,
                                            FileOpenOptions opts) {
  ASSIGN_OR_RETURN(NbdTarget t, parse_nbd_name(path));
  nbd_handle* h = nbd_create();
  if (!h) return nbd_error("nbd_create");
  if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
      nbd_aio_connect_uri(h, t.uri.c_str()) < 0) {
    return connect_error(h, t);
  }
  // The handshake, bounded: a few round trips on a blocking poll(2) (the loop has nothing else
  // to run yet; opening is synchronous, as for host files).
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kConnectTimeoutMs);
  while (nbd_aio_is_connecting(h)) {
    unsigned dir = nbd_aio_get_direction(h);
    pollfd p{.fd = nbd_aio_get_fd(h), .events = 0, .revents = 0};
    if (dir & LIBNBD_AIO_DIRECTION_READ) p.events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) p.events |= POLLOUT;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    int r = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      nbd_close(h);
      return make_error(
          ErrorCode::kIo,
          "Could not connect to " + t.display + ": the server did not finish the handshake",
          ETIMEDOUT);
    }
    if (r < 0) return connect_error(h, t);
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(h) < 0)
      return connect_error(h, t);
    if ((p.revents & POLLOUT) && nbd_aio_is_connecting(h) && nbd_aio_notify_write(h) < 0)
      return connect_error(h, t);
  }
  if (!nbd_aio_is_ready(h)) return connect_error(h, t);
  const bool export_ro = nbd_is_read_only(h) == 1;
  if (export_ro && !opts.read_only) {
    nbd_close(h);
    return read_only_error("Could not open " + t.display + ": the export is read-only");
  }
  auto conn = std::make_shared<Conn>(loop, h);
  return std::unique_ptr<File>(
      new NbdFile(std::move(conn), t.display, opts.read_only || export_ro));
}

}  // namespace img::nbd_client
