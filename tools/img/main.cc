// img: a qemu-img-compatible tool on libimg. main dispatches to one subcommand a file.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace {

constexpr imgcli::Command kCommands[] = {
    {"amend", "change the format-specific options of an image (compat, refcount_bits, ...)",
     imgcli::run_amend},
    {"bitmap", "add, remove, clear, enable or disable a persistent dirty bitmap",
     imgcli::run_bitmap},
    {"bench", "run a simple benchmark of requests on an image", imgcli::run_bench},
    {"check", "check the image for consistency (and repair it with -r)", imgcli::run_check},
    {"clone", "make a new image from SRC: an overlay on it (--linked) or a copy (--full)",
     imgcli::run_clone},
    {"commit", "write an overlay's data into its backing file", imgcli::run_commit},
    {"compare", "compare the contents of two images", imgcli::run_compare},
    {"convert", "copy an image into a new one, possibly of another format", imgcli::run_convert},
    {"create", "create a new image", imgcli::run_create},
    {"dd", "copy bytes of an image into a new one, as dd(1) does", imgcli::run_dd},
    {"info", "show facts about an image", imgcli::run_info},
    {"map", "show where the data of an image lies, through its backing chain", imgcli::run_map},
    {"measure", "compute the file size a new image needs", imgcli::run_measure},
    {"rebase", "change the backing file of an image", imgcli::run_rebase},
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
  imgcli::set_program_name(argv[0]);
  const char* prog = imgcli::program_name().c_str();
  if (argc < 2) {
    std::fprintf(stderr, "%s: Not enough arguments\nTry '%s --help' for more information\n", prog,
                 prog);
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
  std::fprintf(stderr, "%s: Command not found: %s\nTry '%s --help' for more information\n", prog,
               cmd.c_str(), prog);
  return 1;
}
