// End to end under KVM: virtio-net. In a network namespace of its own (a forked child, so the
// host's network never sees it) the test makes a tap, listens on it with a packet socket, runs
// the vmm binary with `--net tap=NAME` on the freestanding test guest, sees the guest's frame on
// the tap and injects one back, which the guest reports on its serial port. Skipped, with the
// reason, where /dev/kvm, /dev/net/tun or network namespaces are not available.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "run_shell.h"
#include "tap_peer.h"

namespace {

namespace fs = std::filesystem;
using vmm_test::kTestTap;
using vmm_test::run_shell;
using vmm_test::slurp;

TEST(VmmE2eNet, GuestFrameSeenOnTheTapAndAnInjectedFrameReachesTheGuest) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/net/tun is not available";
  const char* t = std::getenv("IMG_TEST_TMPDIR");
  std::string dir = std::string(t && *t ? t : "/tmp") + "/vmm_e2e_net_" + std::to_string(getpid());
  fs::create_directories(dir);
  std::string status = vmm_test::run_with_tap_peer(
      dir,
      std::string("timeout 300 ") + VMM_BINARY + " run --kernel " + VMM_TEST_GUEST +
          " --memory 64M --cmdline 'nodisk net' --net tap=" + kTestTap + ",mac=02:00:00:12:34:56",
      240000);
  if (status.starts_with("SKIP")) GTEST_SKIP() << status.substr(5);
  ASSERT_TRUE(status.starts_with("RC ")) << status;
  std::string out = slurp(dir + "/out.txt"), err = slurp(dir + "/err.txt");
  EXPECT_EQ(status, "RC 0\n") << err;
  EXPECT_NE(err.find("attached to tap vmmtap0, guest MAC 02:00:00:12:34:56"), std::string::npos)
      << err;
  EXPECT_NE(out.find("GUEST: net mac 02:00:00:12:34:56"), std::string::npos) << out;
  EXPECT_EQ(slurp(dir + "/seen"), "02:00:00:12:34:56 vmm-guest-hello\n") << out;
  EXPECT_NE(out.find("GUEST: net got 'vmm-host-reply'"), std::string::npos) << out;
  EXPECT_NE(out.find("GUEST: PASS"), std::string::npos) << out;
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(VmmE2eNet, BadNetOptionsAndAMissingTapAreClearErrors) {
  if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing or not read/write";
  const char* t = std::getenv("IMG_TEST_TMPDIR");
  std::string dir =
      std::string(t && *t ? t : "/tmp") + "/vmm_e2e_netopt_" + std::to_string(getpid());
  fs::create_directories(dir);
  std::string run = std::string(VMM_BINARY) + " run --kernel " + VMM_TEST_GUEST + " --memory 64M ";
  auto r = run_shell(run + "--net user", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net must be tap, tap=NAME, bridge=BR or network=NAME"), std::string::npos)
      << r.err;
  r = run_shell(run + "--net tap=vmmnosuch7", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--net: tap vmmnosuch7 does not exist"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

}  // namespace
