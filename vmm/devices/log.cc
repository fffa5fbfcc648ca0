#include "devices/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace vmm {
namespace {
std::atomic<int> g_debug{-1};
}

bool debug_enabled() {
  int v = g_debug.load();
  if (v < 0) {
    const char* e = std::getenv("VMM_DEBUG");
    v = (e && *e && *e != '0') ? 1 : 0;
    g_debug = v;
  }
  return v == 1;
}

void set_debug(bool on) { g_debug = on ? 1 : 0; }

void debug_log(const char* fmt, ...) {
  if (!debug_enabled()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "vmm: debug: %s\n", buf);
}

}  // namespace vmm
