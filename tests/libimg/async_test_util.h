// Helpers for tests of coroutine code on one IoLoop (locks, caches): run the loop until it has
// nothing left to do, so a test can then check that every coroutine it spawned finished.
#pragma once

#include "img/io_loop.h"

namespace img::test {

// Runs the loop until nothing is ready and nothing is in flight. A coroutine still suspended
// after this waits for a wake-up that will never come: a lost wake-up or a deadlock. (drain()
// would abort instead of letting the test say which coroutine is stuck.)
inline void run_until_quiet(IoLoop& loop) {
  while (loop.run_once(true)) {
  }
}

}  // namespace img::test
