#include "api/event_loop.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

namespace vmm::api {

img::Result<std::unique_ptr<EventLoop>> EventLoop::create() {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return img::io_error(errno, "epoll_create1");
  return std::unique_ptr<EventLoop>(new EventLoop(fd));
}

EventLoop::~EventLoop() { ::close(epfd_); }

img::Status EventLoop::add(int fd, uint32_t events, Callback cb) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) return img::io_error(errno, "epoll_ctl ADD");
  callbacks_[fd] = std::make_shared<Callback>(std::move(cb));
  return {};
}

img::Status EventLoop::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) < 0) return img::io_error(errno, "epoll_ctl MOD");
  return {};
}

void EventLoop::remove(int fd) {
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  callbacks_.erase(fd);
}

img::Status EventLoop::run_once(int timeout_ms) {
  epoll_event evs[16];
  int n = ::epoll_wait(epfd_, evs, 16, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return {};
    return img::io_error(errno, "epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    // Looked up per event: an earlier callback in this batch may have removed this descriptor
    // (and a new one may reuse the number, which then gets a spurious, harmless wake-up).
    auto it = callbacks_.find(evs[i].data.fd);
    if (it == callbacks_.end()) continue;
    std::shared_ptr<Callback> cb = it->second;
    (*cb)(evs[i].events);
  }
  return {};
}

}  // namespace vmm::api
