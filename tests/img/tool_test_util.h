// Helpers for tests that run the img binary and qemu-img: a temporary folder, running a shell
// command with its output and exit code, and a tiny JSON reader that flattens an object into
// "a.b.c" -> value text for key-by-key comparison.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace imgtest {

inline const std::string kImg = IMG_BINARY;

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("IMG_TEST_TMPDIR");
    std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
    std::filesystem::create_directories(root);
    std::string tmpl = (root / "imgcli-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

struct CmdResult {
  int rc = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs cmd with sh in dir (if given); stdin is /dev/null.
inline CmdResult sh(const std::string& cmd, const std::string& dir = "") {
  static int counter = 0;
  std::string base = std::filesystem::temp_directory_path() /
                     ("imgcli-run-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::string full = (dir.empty() ? "" : "cd '" + dir + "' && ") + "(" + cmd + ") </dev/null >" +
                     base + ".out 2>" + base + ".err";
  int status = std::system(full.c_str());
  CmdResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return r;
}

// Strips the program name that starts each error line ("img: " / "qemu-img: "), so the two
// tools' messages compare equal.
inline std::string unprefixed(std::string s, const std::string& prog) {
  for (size_t i = s.find(prog + ": "); i != std::string::npos; i = s.find(prog + ": ", i)) {
    s.erase(i, prog.size() + 2);
  }
  return s;
}

inline CmdResult img(const std::string& args, const std::string& dir = "") {
  return sh("'" + kImg + "' " + args, dir);
}

inline bool have_qemu_img() {
  static const bool have = sh("qemu-img --version").rc == 0;
  return have;
}
inline bool have_qemu_io() {
  static const bool have = sh("qemu-io --version").rc == 0;
  return have;
}

#define REQUIRE_QEMU_IMG()                                                      \
  do {                                                                          \
    if (!::imgtest::have_qemu_img()) {                                          \
      GTEST_SKIP() << "qemu-img is not installed (apt-get install qemu-utils)"; \
    }                                                                           \
  } while (0)
#define REQUIRE_QEMU_IO()                                                      \
  do {                                                                         \
    if (!::imgtest::have_qemu_io()) {                                          \
      GTEST_SKIP() << "qemu-io is not installed (apt-get install qemu-utils)"; \
    }                                                                          \
  } while (0)

// A minimal JSON reader: objects, arrays, strings, numbers, true/false/null. Flattens into
// path -> the value's text ("format-specific.data.compat" -> "\"1.1\""). Returns false on
// malformed input.
class JsonFlat {
 public:
  static bool parse(const std::string& text, std::map<std::string, std::string>* out) {
    JsonFlat p(text, out);
    p.ws();
    if (!p.value("")) return false;
    p.ws();
    return p.i_ == text.size();
  }

 private:
  JsonFlat(const std::string& t, std::map<std::string, std::string>* out) : t_(t), out_(out) {}
  void ws() {
    while (i_ < t_.size() && std::isspace(static_cast<unsigned char>(t_[i_]))) ++i_;
  }
  bool string(std::string* s) {
    if (i_ >= t_.size() || t_[i_] != '"') return false;
    size_t start = i_++;
    while (i_ < t_.size() && t_[i_] != '"') i_ += t_[i_] == '\\' ? 2 : 1;
    if (i_ >= t_.size()) return false;
    ++i_;
    *s = t_.substr(start, i_ - start);
    return true;
  }
  bool value(const std::string& path) {
    ws();
    if (i_ >= t_.size()) return false;
    char c = t_[i_];
    if (c == '{' || c == '[') {
      bool obj = c == '{';
      ++i_;
      ws();
      char close = obj ? '}' : ']';
      if (i_ < t_.size() && t_[i_] == close) {
        (*out_)[path] = obj ? "{}" : "[]";
        ++i_;
        return true;
      }
      for (int n = 0;; ++n) {
        ws();
        std::string key = std::to_string(n);
        if (obj) {
          if (!string(&key)) return false;
          key = key.substr(1, key.size() - 2);
          ws();
          if (i_ >= t_.size() || t_[i_++] != ':') return false;
        }
        if (!value(path.empty() ? key : path + "." + key)) return false;
        ws();
        if (i_ < t_.size() && t_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < t_.size() && t_[i_] == close) {
          ++i_;
          return true;
        }
        return false;
      }
    }
    std::string s;
    if (c == '"') {
      if (!string(&s)) return false;
    } else {
      size_t start = i_;
      while (i_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[i_])) || t_[i_] == '-' ||
                                t_[i_] == '.' || t_[i_] == '+')) {
        ++i_;
      }
      if (i_ == start) return false;
      s = t_.substr(start, i_ - start);
    }
    (*out_)[path] = s;
    return true;
  }
  const std::string& t_;
  std::map<std::string, std::string>* out_;
  size_t i_ = 0;
};

inline std::map<std::string, std::string> flat_json(const std::string& text) {
  std::map<std::string, std::string> m;
  EXPECT_TRUE(JsonFlat::parse(text, &m)) << "not JSON:\n" << text;
  return m;
}

}  // namespace imgtest
