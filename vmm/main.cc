// vmm: a lean KVM VMM. Subcommands: `run` boots a kernel, `check` tells whether this host can,
// and the virsh-like lifecycle over a state directory (lifecycle/cli.h: define, start, list, ...).
// Errors are values everywhere below; CLI11 throws while parsing and is caught here.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "devices/log.h"
#include "lifecycle/cli.h"
#include "lifecycle/run_flags.h"
#include "machine/check.h"
#include "machine/config.h"
#include "machine/machine.h"

namespace {

int run_command(const vmm::MachineConfig& c) {
  auto m = vmm::Machine::create(c);
  if (!m) {
    std::fprintf(stderr, "vmm: %s\n", m.error().to_string().c_str());
    return m.error().code() == img::ErrorCode::kInvalidArgument ? vmm::kExitBadArguments
                                                                : vmm::kExitVmmError;
  }
  return (*m)->run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmm: a lean KVM virtual machine monitor"};
  app.require_subcommand(1);
  bool debug = false;
  app.add_flag("--debug", debug, "log unhandled device accesses on stderr (also VMM_DEBUG=1)");

  vmm::lifecycle::RunFlags flags;
  CLI::App* run =
      app.add_subcommand("run", "boot a kernel (bzImage, vmlinux with PVH note, or ELF64)");
  vmm::lifecycle::add_run_flags(*run, flags, /*with_host_io=*/true);
  CLI::App* check = app.add_subcommand("check", "check that this host can run guests");
  vmm::lifecycle::LifecycleCli lifecycle(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : vmm::kExitBadArguments;
  }
  if (debug) vmm::set_debug(true);
  if (check->parsed()) return vmm::print_host_checks(vmm::run_host_checks());
  if (auto rc = lifecycle.dispatch()) return *rc;

  auto cfg = vmm::lifecycle::to_config(*run, flags);
  if (!cfg) {
    std::fprintf(stderr, "vmm: %s\n", cfg.error().message().c_str());
    return vmm::kExitBadArguments;
  }
  return run_command(*cfg);
}
