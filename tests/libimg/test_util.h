// Helpers shared by the libimg tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "img/block_driver.h"
#include "img/io_loop.h"

namespace img::test {

// A fresh directory for one test's files, removed at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("IMG_TEST_TMPDIR");
    std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
    std::filesystem::create_directories(root);
    std::string tmpl = (root / "imgtest-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    if (!p) std::abort();
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// All of d's bytes (a failed read fails the test).
inline std::vector<uint8_t> read_all(IoLoop& loop, BlockDriver& d) {
  std::vector<uint8_t> out(d.size());
  auto s = loop.run(d.read(0, out.data(), out.size()));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  return out;
}

inline std::unique_ptr<IoLoop> make_loop() {
  auto l = IoLoop::create();
  if (!l) {
    ADD_FAILURE() << l.error().to_string();
    std::abort();
  }
  return std::move(*l);
}

#define ASSERT_OK(expr)                                              \
  do {                                                               \
    auto&& assert_ok_r_ = (expr);                                    \
    ASSERT_TRUE(assert_ok_r_.has_value()) << assert_ok_r_.error().to_string(); \
  } while (0)
#define EXPECT_OK(expr)                                              \
  do {                                                               \
    auto&& expect_ok_r_ = (expr);                                    \
    EXPECT_TRUE(expect_ok_r_.has_value()) << expect_ok_r_.error().to_string(); \
  } while (0)

}  // namespace img::test
