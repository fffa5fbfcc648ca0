// driver_status_fn: block status through a chain of drivers, in ChainMapper's terms.
#include <algorithm>

#include "nbd/session.h"

namespace img::nbd {

namespace {

Task<Result<ChainStatus>> chain_status(BlockDriver* d, uint64_t off, uint64_t len) {
  for (unsigned depth = 0;; ++depth) {
    ChainStatus cs;
    cs.depth = depth;
    if (off >= d->size()) {  // past a shorter backing file: reads as zeros
      cs.length = len;
      cs.zero = true;
      co_return cs;
    }
    uint64_t n = std::min(len, d->size() - off);
    CO_ASSIGN_OR_RETURN(BlockStatus st, co_await d->block_status(off, n));
    cs.length = st.length;
    switch (st.kind) {
      case BlockStatus::Kind::kData:
        cs.data = cs.allocated = true;
        co_return cs;
      case BlockStatus::Kind::kZero:
        cs.zero = cs.allocated = true;
        co_return cs;
      case BlockStatus::Kind::kUnallocated:
        cs.zero = true;
        co_return cs;
      case BlockStatus::Kind::kBacking:
        if (!d->backing()) {
          cs.zero = true;
          co_return cs;
        }
        d = d->backing();
        len = st.length;
        break;
    }
  }
}

}  // namespace

StatusFn driver_status_fn(BlockDriver& drv) {
  return [d = &drv](uint64_t off, uint64_t len) { return chain_status(d, off, len); };
}

}  // namespace img::nbd
