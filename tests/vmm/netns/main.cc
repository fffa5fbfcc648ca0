// main() of vmm_netns_tests: a network namespace of its own first (netns.h), then the tests.
#include <gtest/gtest.h>
#include <sched.h>

#include <cerrno>
#include <cstring>

#include "netns.h"

namespace vmm_test {
namespace {
std::string g_missing = "not set up";
}
const std::string& netns_missing() { return g_missing; }
}  // namespace vmm_test

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // Before any thread exists: unshare(CLONE_NEWNET) acts on the calling thread only.
  if (::unshare(CLONE_NEWNET) == 0) {
    vmm_test::g_missing.clear();
  } else {
    vmm_test::g_missing = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  }
  return RUN_ALL_TESTS();
}
