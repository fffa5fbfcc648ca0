// Running qemu-img / qemu-io from tests: the reference for interoperability (DESIGN.md,
// "Testing on these machines"). Tests that need them skip, saying why, where they are missing.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace img::test {

struct ToolResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs a shell command line, capturing its output (stderr merged) and exit code.
inline ToolResult run_tool(const std::string& cmd) {
  ToolResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline bool have_tool(const char* name) {
  return run_tool(std::string("command -v ") + name).exit_code == 0;
}

#define SKIP_WITHOUT_QEMU_TOOLS()                                                       \
  do {                                                                                  \
    if (!::img::test::have_tool("qemu-img") || !::img::test::have_tool("qemu-io"))      \
      GTEST_SKIP() << "qemu-img/qemu-io not installed (Debian package qemu-utils); "    \
                      "interop checks need them";                                       \
  } while (0)

// The raw text of a JSON scalar after "key": (first occurrence), quotes stripped; "" if absent.
// Enough for qemu-img's flat --output=json fields.
inline std::string json_field(const std::string& json, const std::string& key) {
  std::string pat = "\"" + key + "\":";
  size_t i = json.find(pat);
  if (i == std::string::npos) return "";
  i += pat.size();
  while (i < json.size() && json[i] == ' ') ++i;
  size_t j = i;
  while (j < json.size() && json[j] != ',' && json[j] != '\n' && json[j] != '}') ++j;
  std::string v = json.substr(i, j - i);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return v;
}

// qemu-img check --output=json omits counters that are zero.
inline uint64_t json_count(const std::string& json, const std::string& key) {
  std::string v = json_field(json, key);
  return v.empty() ? 0 : std::stoull(v);
}

}  // namespace img::test
