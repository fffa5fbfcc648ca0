// EventLoop: the VMM main thread's loop, epoll over a handful of descriptors (the control socket
// and its client, a signalfd, the machine's event eventfd, timers), each with a callback.
// epoll rather than the io_uring IoLoop: the main thread serves few descriptors with short
// synchronous handlers (a pause waits for the vCPUs to park), where io_uring's many requests in
// flight buy nothing.
//
// Thread-safety: one thread. Callbacks may add and remove descriptors, their own included.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "img/status.h"

namespace vmm::api {

class EventLoop {
 public:
  using Callback = std::function<void(uint32_t events)>;  // EPOLLIN, EPOLLOUT, EPOLLHUP...
  static img::Result<std::unique_ptr<EventLoop>> create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  img::Status add(int fd, uint32_t events, Callback cb);
  img::Status modify(int fd, uint32_t events);
  void remove(int fd);
  // Waits up to timeout_ms (-1: forever) and runs the callbacks of the ready descriptors.
  img::Status run_once(int timeout_ms);

 private:
  explicit EventLoop(int epfd) : epfd_(epfd) {}
  int epfd_;
  // shared_ptr: a callback that removes itself keeps running on its own copy.
  std::map<int, std::shared_ptr<Callback>> callbacks_;
};

}  // namespace vmm::api
