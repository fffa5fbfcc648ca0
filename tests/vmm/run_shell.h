// Runs a shell command for the VMM's end-to-end tests, its stdout and stderr kept in files in a
// test folder (a guest's serial output can be large), and reads them back.
#pragma once

#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace vmm_test {

inline std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct RunResult {
  int rc;
  std::string out, err;
  double seconds;
};

// cmd runs with no standard input; its output lands in dir/out.txt and dir/err.txt.
inline RunResult run_shell(const std::string& cmd, const std::string& dir) {
  auto t0 = std::chrono::steady_clock::now();
  std::string full = cmd + " >" + dir + "/out.txt 2>" + dir + "/err.txt </dev/null";
  int st = std::system(full.c_str());
  RunResult r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(dir + "/out.txt");
  r.err = slurp(dir + "/err.txt");
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace vmm_test
