#include "security/thread_spawner.h"

#include <cerrno>
#include <optional>
#include <system_error>

#include "security/seccomp.h"

namespace vmm::security {
namespace {

img::Result<std::thread> make_thread(std::function<void()> fn) {
  try {
    return std::thread(std::move(fn));
  } catch (const std::system_error& e) {
    return img::io_error(e.code().value(), "creating a thread");
  }
}

struct Request {
  std::function<void()> fn;
  std::optional<img::Result<std::thread>> result;  // set by the spawner
};

// The process-wide spawner; guarded by mu.
struct Spawner {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Request*> queue;
  bool running = false;
  bool stopping = false;
  std::thread thread;
};

Spawner& spawner() {
  static Spawner s;
  return s;
}

void serve(img::Status filter) {
  Spawner& s = spawner();
  std::unique_lock lock(s.mu);
  for (;;) {
    s.cv.wait(lock, [&] { return s.stopping || !s.queue.empty(); });
    if (s.queue.empty()) return;  // stopping and nothing left
    Request* r = s.queue.front();
    s.queue.pop_front();
    if (filter) {
      r->result = make_thread(std::move(r->fn));
    } else {
      r->result = img::Unexpected(filter.error());  // no unfiltered thread comes from here
    }
    s.cv.notify_all();
  }
}

}  // namespace

img::Status ThreadSpawner::start() {
  Spawner& s = spawner();
  std::lock_guard lock(s.mu);
  if (s.running) return {};
  s.stopping = false;
  ASSIGN_OR_RETURN(s.thread, make_thread([] { serve(enter_thread(ThreadKind::kSpawner)); }));
  s.running = true;
  return {};
}

void ThreadSpawner::stop() {
  Spawner& s = spawner();
  {
    std::lock_guard lock(s.mu);
    if (!s.running) return;
    s.stopping = true;
  }
  s.cv.notify_all();
  s.thread.join();
  std::lock_guard lock(s.mu);
  s.running = false;
}

img::Result<std::thread> spawn_thread(std::function<void()> fn) {
  Spawner& s = spawner();
  std::unique_lock lock(s.mu);
  if (!s.running || s.stopping) {
    lock.unlock();
    return make_thread(std::move(fn));
  }
  Request r{std::move(fn), std::nullopt};
  s.queue.push_back(&r);
  s.cv.notify_all();
  s.cv.wait(lock, [&] { return r.result.has_value(); });
  return std::move(*r.result);
}

}  // namespace vmm::security
