// Helpers every img subcommand shares: argument parsing with CLI11, qemu-img's error and size
// formats, and opening images.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/file.h"
#include "img/io_loop.h"
#include "img/snapshot.h"
#include "img/status.h"

namespace imgcli {

// Exit codes (qemu-img's).
constexpr int kExitOk = 0;
constexpr int kExitError = 1;

// A subcommand: its name, one line of help, and its entry (args exclude "img" and the name).
struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};
int run_create(const std::vector<std::string>& args);
int run_info(const std::vector<std::string>& args);
int run_check(const std::vector<std::string>& args);
int run_convert(const std::vector<std::string>& args);
int run_resize(const std::vector<std::string>& args);
int run_map(const std::vector<std::string>& args);
int run_compare(const std::vector<std::string>& args);
int run_measure(const std::vector<std::string>& args);
int run_dd(const std::vector<std::string>& args);
int run_snapshot(const std::vector<std::string>& args);
int run_commit(const std::vector<std::string>& args);
int run_rebase(const std::vector<std::string>& args);
int run_amend(const std::vector<std::string>& args);
int run_bitmap(const std::vector<std::string>& args);
int run_clone(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);

// Parses args into app. Returns -1 to go on, or the exit code (0 after --help, 1 on a bad flag,
// with CLI11's message printed).
int parse_args(CLI::App& app, const std::vector<std::string>& args);

// The name errors start with: the basename of argv[0], as qemu-img does ("qemu-img: ..." when
// img is installed or linked under that name). main sets it first.
void set_program_name(const char* argv0);
const std::string& program_name();

// Prints "<program>: <msg>" to stderr and returns kExitError.
int fail(const std::string& msg);
// fail(msg) and qemu-img's hint "Try '<program> --help' for more information", for a wrong
// number of file arguments and the like.
int usage_error(const std::string& msg);
// "Could not open 'path': No such file or directory" from an open error.
std::string open_error(const std::string& path, const img::Error& e);
// The reason part of an error: strerror for OS errors, else the message.
std::string reason(const img::Error& e);

// qemu's size_to_str: "196 KiB", "1.5 GiB", "0 B".
std::string human_size(uint64_t bytes);

// qemu-img's cvtnum_full for a named option value ("start offset"): a size in qemu's syntax
// within [min, max], else its two-line error ("Invalid start offset specified. You may use k,
// M, G, ...") printed and nullopt.
std::optional<uint64_t> cvtnum(const std::string& name, const std::string& value, uint64_t min = 0,
                               uint64_t max = INT64_MAX);
// qemu-img's "Snapshot list:" table (snapshot -l, info), snapshot.cc.
void print_snapshot_table(const std::vector<img::SnapshotInfo>& snapshots);

// A loop for one command; prints why on failure.
std::unique_ptr<img::IoLoop> make_loop();

// Checks a -f/-O value: "raw" or "qcow2". Returns an error message naming it otherwise.
bool known_format(const std::string& fmt);

// Probes or checks the format of an open file ("raw" / "qcow2").
img::Result<std::string> detect_format(img::IoLoop& loop, img::File& f, const std::string& fmt);

}  // namespace imgcli
