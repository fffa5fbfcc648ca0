// libimg's shared worker threads (compressing and decompressing clusters in parallel) start on
// first use, on whatever thread first needs them. A caller that forbids thread creation later
// (the VMM's per-thread seccomp filters: vmm/security/seccomp.h) starts them up front instead,
// with a function each worker runs first.
//
// Thread-safety: call once, before any image work that may compress or decompress.
#pragma once

#include <functional>

#include "img/status.h"

namespace img {

// Starts the shared workers now; each runs init() before its first job, and one whose init()
// returns false takes no job (with none left, jobs run on the caller's thread, as with no
// threads). An error if the workers were already running (their init can no longer be chosen).
Status start_shared_workers(std::function<bool()> init);

}  // namespace img
