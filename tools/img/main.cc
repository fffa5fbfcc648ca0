// img: a qemu-img-compatible tool on libimg. main dispatches to one subcommand a file.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace {

constexpr imgcli::Command kCommands[] = {
    {"check", "check the image for consistency (and repair it with -r)", imgcli::run_check},
    {"convert", "copy an image into a new one, possibly of another format", imgcli::run_convert},
    {"create", "create a new image", imgcli::run_create},
    {"info", "show facts about an image", imgcli::run_info},
    {"resize", "change the virtual size of an image", imgcli::run_resize},
    {"snapshot", "list, create, apply or delete internal snapshots", imgcli::run_snapshot},
};

void usage(FILE* out) {
  std::fprintf(out,
               "img: a qemu-img compatible disk image tool\n"
               "usage: img [standard options] command [command options]\n\n"
               "Commands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'img COMMAND --help' for the options of a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "img: Not enough arguments\nTry 'img --help' for more information\n");
    return 1;
  }
  std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  if (cmd == "-V" || cmd == "--version") {
    std::printf("img version 0.1 (libimg; qemu-img 7.2 compatible)\n");
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (cmd == c.name) return c.run(args);
  }
  std::fprintf(stderr, "img: Command not found: %s\nTry 'img --help' for more information\n",
               cmd.c_str());
  return 1;
}
