// The tests of this binary run in a network namespace of their own: main() unshares one before
// any test starts, so bridges, taps and addresses they make never touch the host's network and
// vanish with the process. Without the privilege for it every test skips with the reason.
#pragma once

#include <string>

namespace vmm_test {

// "" when the namespace is ours, else why there is none.
const std::string& netns_missing();

}  // namespace vmm_test

#define REQUIRE_NETNS()                                                      \
  do {                                                                       \
    if (!vmm_test::netns_missing().empty())                                  \
      GTEST_SKIP() << "no network namespace: " << vmm_test::netns_missing(); \
  } while (0)
