// A main() for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput once on every file
// named on the command line (a folder: every file in it, sorted), so the normal (gcc) suite
// replays the seed corpora and every input a fuzzer ever crashed on (tests/fuzz/CMakeLists.txt).
// A property a target checks ends in __builtin_trap(), which fails the test with the file named
// just before it on stderr.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool run_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", p.c_str());
    return false;
  }
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.c_str(), data.size());
  // A copy of exactly the input's size, so a read past its end is an ASan finding here too.
  std::vector<uint8_t> exact(data.begin(), data.end());
  LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        ok &= run_file(f);
        ++n;
      }
    } else {
      ok &= run_file(arg);
      ++n;
    }
  }
  std::fprintf(stderr, "replay: %zu inputs, none crashed\n", n);
  return ok && n > 0 ? 0 : 1;
}
