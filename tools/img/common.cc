// Shared helpers of the img subcommands.
#include "common.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "img/image.h"
#include "img/ops.h"

namespace imgcli {

int parse_args(CLI::App& app, const std::vector<std::string>& args) {
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitError;  // qemu-img exits 1 on a usage error, whatever CLI11 would pick
  }
  return -1;
}

namespace {
std::string& program_name_storage() {
  static std::string name = "img";
  return name;
}
}  // namespace

void set_program_name(const char* argv0) {
  std::string s = argv0 ? argv0 : "";
  size_t slash = s.find_last_of('/');
  if (slash != std::string::npos) s = s.substr(slash + 1);
  if (!s.empty()) program_name_storage() = s;
}
const std::string& program_name() { return program_name_storage(); }

int fail(const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s: %s\n", program_name().c_str(), msg.c_str());
  return kExitError;
}

int usage_error(const std::string& msg) {
  fail(msg);
  std::fprintf(stderr, "Try '%s --help' for more information\n", program_name().c_str());
  return kExitError;
}

std::string reason(const img::Error& e) {
  if (e.sys_errno() != 0) return std::strerror(e.sys_errno());
  return e.message();
}

std::string open_error(const std::string& path, const img::Error& e) {
  return "Could not open '" + path + "': " + reason(e);
}

std::string human_size(uint64_t val) {
  static const char* kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exp = 0;
  std::frexp(static_cast<double>(val) / (1000.0 / 1024.0), &exp);
  int i = (exp - 1) / 10;
  uint64_t div = 1ull << (i * 10);
  return img::strfmt("%0.3g %sB", static_cast<double>(val) / static_cast<double>(div),
                     kSuffixes[i]);
}

std::optional<uint64_t> cvtnum(const std::string& name, const std::string& value, uint64_t min,
                               uint64_t max) {
  // qemu_strtosz refuses what parse_size refuses; only a value past 2^64 is out of range there.
  auto v = img::parse_size(value, UINT64_MAX);
  if (!v) {
    bool range = value.find_first_not_of("0123456789") == std::string::npos && !value.empty();
    if (!range) {
      fail("Invalid " + name + " specified. You may use k, M, G, T, P or E suffixes for");
      fail("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
      return std::nullopt;
    }
  }
  if (!v || *v < min || *v > max) {
    fail(img::strfmt("Invalid %s specified. Must be between %llu and %llu.", name.c_str(),
                     (unsigned long long)min, (unsigned long long)max));
    return std::nullopt;
  }
  return *v;
}

std::unique_ptr<img::IoLoop> make_loop() {
  auto loop = img::IoLoop::create();
  if (!loop) {
    fail("cannot start the I/O loop: " + loop.error().to_string());
    return nullptr;
  }
  return std::move(*loop);
}

bool known_format(const std::string& fmt) { return fmt == "raw" || fmt == "qcow2"; }

img::Result<std::string> detect_format(img::IoLoop& loop, img::File& f, const std::string& fmt) {
  if (!fmt.empty()) return fmt;
  return loop.run(img::probe_format(f));
}

}  // namespace imgcli
