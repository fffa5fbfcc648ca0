// A tiny blocking NBD client for tests that speak the protocol byte by byte (hostile ones
// included), against a session served on another thread (ServedSession): what a well-behaved
// client sends is spelled out here so a test can change one field of it.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "img/bytes.h"
#include "img/image.h"
#include "img/mem_file.h"
#include "nbd/proto.h"
#include "nbd/session.h"
#include "nbd/socket_conn.h"

namespace nbdtest {

using img::nbd::Bytes;

inline void put16(Bytes& b, uint16_t v) {
  uint8_t x[2];
  img::store_be16(x, v);
  b.insert(b.end(), x, x + 2);
}
inline void put32(Bytes& b, uint32_t v) {
  uint8_t x[4];
  img::store_be32(x, v);
  b.insert(b.end(), x, x + 4);
}
inline void put64(Bytes& b, uint64_t v) {
  uint8_t x[8];
  img::store_be64(x, v);
  b.insert(b.end(), x, x + 8);
}
inline Bytes option(uint32_t opt, const Bytes& data) {
  Bytes b;
  put64(b, img::nbd::kOptMagic);
  put32(b, opt);
  put32(b, static_cast<uint32_t>(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}
inline Bytes go_data(const std::string& name) {
  Bytes d;
  put32(d, static_cast<uint32_t>(name.size()));
  d.insert(d.end(), name.begin(), name.end());
  put16(d, 0);
  return d;
}
inline Bytes meta_data(const std::string& name, const std::vector<std::string>& queries) {
  Bytes d;
  put32(d, static_cast<uint32_t>(name.size()));
  d.insert(d.end(), name.begin(), name.end());
  put32(d, static_cast<uint32_t>(queries.size()));
  for (const auto& q : queries) {
    put32(d, static_cast<uint32_t>(q.size()));
    d.insert(d.end(), q.begin(), q.end());
  }
  return d;
}
inline Bytes request(uint16_t type, uint64_t off, uint32_t len, uint64_t cookie = 1,
                     uint16_t flags = 0) {
  Bytes b(img::nbd::kRequestSize);
  img::nbd::encode_request({img::nbd::kRequestMagic, flags, type, cookie, off, len}, b.data());
  return b;
}

// The client's end of a socketpair, with a 5 s timeout on every read so a test fails instead of
// hanging. Calls retry on EINTR: the server thread's io_uring work interrupts them now and then.
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Client() { close(fd_); }
  bool send(const Bytes& b) {
    size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd_, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Exactly n bytes, or nullopt at end of stream / timeout.
  std::optional<Bytes> recv(size_t n) {
    Bytes b(n);
    size_t off = 0;
    while (off < n) {
      ssize_t r = ::recv(fd_, b.data() + off, n - off, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        if (r < 0) std::fprintf(stderr, "test client: recv: %s\n", std::strerror(errno));
        return std::nullopt;
      }
      off += static_cast<size_t>(r);
    }
    return b;
  }
  // True if the server closed the stream (nothing more to read).
  bool closed() {
    uint8_t c;
    ssize_t r;
    do r = ::recv(fd_, &c, 1, 0);
    while (r < 0 && errno == EINTR);
    return r == 0;
  }
  // Reads one option reply: (type, data).
  std::optional<std::pair<uint32_t, Bytes>> option_reply() {
    auto h = recv(20);
    if (!h || img::load_be64(h->data()) != img::nbd::kOptReplyMagic) return std::nullopt;
    uint32_t type = img::load_be32(h->data() + 12), len = img::load_be32(h->data() + 16);
    auto d = recv(len);
    if (!d) return std::nullopt;
    return std::make_pair(type, *d);
  }
  // Greeting, client flags, then (structured) replies and base:allocation, then GO.
  bool handshake(bool structured = true, bool meta = true, const std::string& name = "") {
    if (!recv(18) || !send({0, 0, 0, 3})) return false;
    if (structured) {
      if (!send(option(img::nbd::kOptStructuredReply, {}))) return false;
      auto r = option_reply();
      if (!r || r->first != img::nbd::kRepAck) return false;
      if (meta) {
        send(option(img::nbd::kOptSetMetaContext, meta_data(name, {"base:allocation"})));
        for (;;) {
          auto m = option_reply();
          if (!m) return false;
          if (m->first == img::nbd::kRepAck) break;
        }
      }
    }
    send(option(img::nbd::kOptGo, go_data(name)));
    for (;;) {
      auto r = option_reply();
      if (!r) return false;
      if (r->first == img::nbd::kRepAck) return true;
      if (r->first != img::nbd::kRepInfo) return false;
    }
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// A raw in-memory image of size bytes served on its own thread, one session per connect().
class ServedExport {
 public:
  explicit ServedExport(uint64_t size, bool read_only = false) {
    loop_ = img::IoLoop::create().value();
    auto f = std::make_unique<img::MemFile>(loop_.get());
    f->bytes().resize(size);
    for (uint64_t i = 0; i < size; ++i) f->bytes()[i] = static_cast<uint8_t>(i * 7 + 1);
    file_ = f.get();
    drv_ = img::make_raw_driver(std::move(f));
    exp_.driver = drv_.get();
    exp_.status = img::nbd::driver_status_fn(*drv_);
    exp_.read_only = read_only;
  }
  ~ServedExport() {
    if (thread_.joinable()) thread_.join();
  }
  // Starts n sessions on one loop thread; returns the clients' ends.
  std::vector<std::unique_ptr<Client>> start(int n = 1) {
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<int> server_fds;
    for (int i = 0; i < n; ++i) {
      int sv[2];
      EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
      clients.push_back(std::make_unique<Client>(sv[0]));
      server_fds.push_back(sv[1]);
    }
    results_.resize(n);
    thread_ = std::thread([this, server_fds] {
      std::vector<std::unique_ptr<img::nbd::SocketConn>> conns;
      for (size_t i = 0; i < server_fds.size(); ++i) {
        conns.push_back(std::make_unique<img::nbd::SocketConn>(*loop_, server_fds[i]));
        loop_->spawn(serve(*conns.back(), i));
      }
      loop_->drain();
    });
    return clients;
  }
  // How session i ended ("" for a clean end); valid after join().
  void join() { thread_.join(); }
  const std::string& result(size_t i) const { return results_[i]; }
  img::MemFile& file() { return *file_; }
  img::nbd::ExportConfig& config() { return exp_; }

 private:
  img::Task<void> serve(img::nbd::SocketConn& c, size_t i) {
    auto st = co_await img::nbd::serve_client(*loop_, c, exp_);
    results_[i] = st ? "" : st.error().message();
    c.close();
  }
  std::unique_ptr<img::IoLoop> loop_;
  img::MemFile* file_ = nullptr;
  std::unique_ptr<img::BlockDriver> drv_;
  img::nbd::ExportConfig exp_;
  std::thread thread_;
  std::vector<std::string> results_;
};

}  // namespace nbdtest
