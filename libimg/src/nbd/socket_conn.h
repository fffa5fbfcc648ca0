// SocketConn: a Conn over a connected stream socket (unix or TCP), non-blocking, on the IoLoop:
// a read or write that would block parks its coroutine on a poll of the socket, so one slow
// client never holds up the loop. Reads go through a small buffer, so the many small headers of
// a busy client cost one recv each batch, not one each.
//
// Thread-safety: one IoLoop thread.
#pragma once

#include <memory>
#include <vector>

#include "img/io_loop.h"
#include "nbd/session.h"

namespace img::nbd {

class SocketConn : public Conn {
 public:
  // Takes ownership of fd (closed on destruction) and makes it non-blocking.
  SocketConn(IoLoop& loop, int fd);
  ~SocketConn() override;
  SocketConn(const SocketConn&) = delete;
  SocketConn& operator=(const SocketConn&) = delete;

  Task<Status> read_exact(void* buf, size_t len) override;
  Task<Status> write_all(std::span<const iovec> iov) override;
  // shutdown(2): a coroutine parked on the socket wakes and fails.
  void close() override;

 private:
  IoLoop& loop_;
  int fd_;
  bool closed_ = false;
  std::vector<uint8_t> rbuf_;
  size_t rpos_ = 0, rend_ = 0;
};

// The error a Conn reports when the peer closed the stream: not worth a log line.
bool is_end_of_stream(const Error& e);
Unexpected end_of_stream();

}  // namespace img::nbd
