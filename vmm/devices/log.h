// Minimal VMM diagnostics: debug lines go to stderr only when VMM_DEBUG is set in the
// environment (or set_debug(true) was called), so normal runs keep the guest console clean.
//
// Thread-safety: safe from any thread.
#pragma once

namespace vmm {

bool debug_enabled();
void set_debug(bool on);
void debug_log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace vmm
