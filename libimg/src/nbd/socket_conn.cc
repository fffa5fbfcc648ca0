// SocketConn: see socket_conn.h.
#include "nbd/socket_conn.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace img::nbd {

namespace {
constexpr size_t kReadBuffer = 64 * 1024;
constexpr const char* kEndOfStream = "the client closed the connection";
}  // namespace

bool is_end_of_stream(const Error& e) { return e.message() == kEndOfStream; }
Unexpected end_of_stream() { return make_error(ErrorCode::kIo, kEndOfStream, EPIPE); }

SocketConn::SocketConn(IoLoop& loop, int fd) : loop_(loop), fd_(fd), rbuf_(kReadBuffer) {
  int fl = fcntl(fd_, F_GETFL);
  if (fl >= 0) fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
}

SocketConn::~SocketConn() { ::close(fd_); }

void SocketConn::close() {
  if (closed_) return;
  closed_ = true;
  ::shutdown(fd_, SHUT_RDWR);
}

Task<Status> SocketConn::read_exact(void* buf, size_t len) {
  auto* out = static_cast<uint8_t*>(buf);
  while (len > 0) {
    if (rpos_ < rend_) {
      size_t n = std::min(len, rend_ - rpos_);
      std::memcpy(out, rbuf_.data() + rpos_, n);
      rpos_ += n;
      out += n;
      len -= n;
      continue;
    }
    if (closed_) co_return end_of_stream();
    // A large read (a write's payload) goes straight into the caller's buffer.
    bool direct = len >= kReadBuffer / 2;
    ssize_t r = direct ? ::recv(fd_, out, len, 0) : ::recv(fd_, rbuf_.data(), rbuf_.size(), 0);
    if (r == 0) co_return end_of_stream();
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        if (errno == ECONNRESET) co_return end_of_stream();
        co_return io_error(errno, "reading from the client");
      }
      int ev = co_await loop_.poll(fd_, POLLIN);
      if (ev < 0 && ev != -EINTR) co_return io_error(-ev, "waiting for the client");
      continue;
    }
    if (direct) {
      out += r;
      len -= static_cast<size_t>(r);
    } else {
      rpos_ = 0;
      rend_ = static_cast<size_t>(r);
    }
  }
  co_return Status{};
}

Task<Status> SocketConn::write_all(std::span<const iovec> iov_in) {
  std::vector<iovec> iov(iov_in.begin(), iov_in.end());
  size_t i = 0;
  while (i < iov.size()) {
    if (iov[i].iov_len == 0) {
      ++i;
      continue;
    }
    if (closed_) co_return end_of_stream();
    msghdr mh{};
    mh.msg_iov = iov.data() + i;
    mh.msg_iovlen = std::min<size_t>(iov.size() - i, IOV_MAX);
    ssize_t r = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) co_return end_of_stream();
      if (errno != EAGAIN && errno != EWOULDBLOCK) co_return io_error(errno, "writing to the client");
      int ev = co_await loop_.poll(fd_, POLLOUT);
      if (ev < 0 && ev != -EINTR) co_return io_error(-ev, "waiting for the client");
      continue;
    }
    auto left = static_cast<size_t>(r);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  co_return Status{};
}

}  // namespace img::nbd
