// Shared helpers of the img subcommands.
#include "common.h"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "img/image.h"

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

int fail(const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "img: %s\n", msg.c_str());
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
