// The lifecycle subcommands on vmm's command line (docs/vmm-lifecycle.md): define, start, list,
// shutdown, reboot, destroy, suspend, resume, undefine, dominfo, domblklist, console, setmem,
// blockresize, each with --state-dir DIR.
//
// Thread-safety: one per process.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>

namespace vmm::lifecycle {

class LifecycleCli {
 public:
  explicit LifecycleCli(CLI::App& app);  // registers the subcommands on app
  ~LifecycleCli();
  // REQUIRES: app has parsed. The exit code when one of these subcommands was given.
  std::optional<int> dispatch();

 private:
  struct Options;
  std::unique_ptr<Options> o_;
};

}  // namespace vmm::lifecycle
