// ThreadSpawner: one thread whose only job is to create threads for others. A virtio device
// starts its I/O thread when the guest writes DRIVER_OK, which happens on a vCPU thread; with the
// spawner running, that vCPU thread hands the creation over and waits, so the vCPU's seccomp list
// holds no clone (a subverted vCPU cannot start threads), and the new thread inherits the
// spawner's filter (seccomp.h) rather than the vCPU's narrower one.
//
// Thread-safety: spawn_thread() from any thread; start()/stop() from the thread that owns the
// machine (Machine::run), before the first and after the last spawn_thread().
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "img/status.h"

namespace vmm::security {

class ThreadSpawner {
 public:
  // Starts the process-wide spawner; its thread installs the kSpawner filter first.
  static img::Status start();
  // Ends it (pending requests are served first). Safe when none runs.
  static void stop();
};

// A thread running fn: created by the spawner when it runs, else by the caller (tests, tools).
// An error if the OS refuses a thread.
img::Result<std::thread> spawn_thread(std::function<void()> fn);

}  // namespace vmm::security
