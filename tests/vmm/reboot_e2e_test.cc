// Reboot in place, end to end under KVM with the freestanding test guest: with --on-reboot
// restart the guest's own reset (it ends each run with an i8042 reset) boots it again in the same
// process, every device found and checked again each time; a control-socket reboot restarts the
// VM even though the test guest powers off on Ctrl-Alt-Del; `reset` restarts it at once, and a
// paused VM stays paused through it; with the default policy a guest reset still ends vmm.
#include <gtest/gtest.h>

#include <string>

#include "control_e2e_fixture.h"
#include "machine/config.h"

namespace {

using Json = nlohmann::json;
using vmm_test::slurp;

// COM1's file output ends lines with "\r\n", as a terminal would get them.
class RebootE2eTest : public vmm_test::ControlE2eTest {
 protected:
  size_t count(const std::string& what) {
    std::string s = slurp(serial_);
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  }
  bool wait_count(const std::string& what, size_t n, int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      if (count(what) >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
};

TEST_F(RebootE2eTest, GuestResetBootsAgainInTheSameProcessWithEveryDevice) {
  // The disk: the guest's blk check expects the image as qemu-io left it, so a second run would
  // fail on the first run's writes; the image only has to survive the resets and check clean
  // (the Linux guest's reboot check drives a disk across a reset).
  std::string img = dir_ + "/disk.qcow2";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f qcow2 " + img + " 64M").c_str()));
  ASSERT_NO_FATAL_FAILURE(
      start({"--kernel", VMM_TEST_GUEST, "--cpus", "2", "--cmdline", "nodisk rng", "--rng",
             "--balloon", "--scsi", img, "--on-reboot", "restart"}));
  // Each run finds virtio-rng through a fresh driver and reads from it, then resets the machine.
  ASSERT_TRUE(wait_count("GUEST: PASS", 3, 60)) << slurp(serial_) << err();
  EXPECT_EQ(count("GUEST: FAIL"), 0u) << slurp(serial_);
  EXPECT_GE(count("GUEST: rng ok"), 3u) << slurp(serial_);
  Json info = cmd("info")["return"];
  EXPECT_GE(info["reboots"].get<int>(), 2) << info;
  EXPECT_EQ(info["on_reboot"], "restart");
  EXPECT_EQ(info["state"], "running");
  EXPECT_NE(err().find("vmm: guest reset (i8042): resetting the machine (reboot 1)"),
            std::string::npos)
      << err();
  EXPECT_EQ(cmd("destroy"), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), vmm::kExitDestroyed) << err();
  EXPECT_EQ(0, std::system(("qemu-img check -q " + img).c_str())) << "qemu-img check";
}

TEST_F(RebootE2eTest, RebootRequestAndResetRestartAndAPausedVmStaysPaused) {
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "nodisk counter"}));
  ASSERT_TRUE(wait_ticks_above(2, 60)) << slurp(serial_) << err();
  EXPECT_EQ(cmd("info")["return"]["on_reboot"], "destroy");
  // The test guest powers off on Ctrl-Alt-Del; asked to reboot, vmm boots it again anyway.
  EXPECT_EQ(cmd("reboot", {{"timeout", 30}}), Json({{"return", Json::object()}}));
  ASSERT_TRUE(wait_count("GUEST: hello", 2, 60)) << slurp(serial_) << err();
  EXPECT_EQ(count("GUEST: ctrl-alt-del, powering off"), 1u);
  EXPECT_NE(err().find("guest powered off (ACPI S5) after a reboot request: resetting"),
            std::string::npos)
      << err();
  ASSERT_TRUE(wait_count("GUEST: tick 2\r\n", 2, 60)) << slurp(serial_);
  Json info = cmd("info")["return"];
  EXPECT_EQ(info["reboots"], 1);
  EXPECT_EQ(info["shutdown_requested"], false);

  // reset: at once, without the guest.
  EXPECT_EQ(cmd("reset"), Json({{"return", Json::object()}}));
  ASSERT_TRUE(wait_count("GUEST: hello", 3, 60)) << slurp(serial_) << err();
  EXPECT_EQ(count("GUEST: ctrl-alt-del"), 1u);
  EXPECT_EQ(cmd("info")["return"]["reboots"], 2);

  // Paused, a reset leaves the VM paused: nothing runs until resume.
  ASSERT_TRUE(wait_count("GUEST: tick 2\r\n", 3, 60)) << slurp(serial_);
  EXPECT_EQ(cmd("pause"), Json({{"return", Json::object()}}));
  EXPECT_EQ(cmd("reset"), Json({{"return", Json::object()}}));
  info = cmd("info")["return"];
  EXPECT_EQ(info["reboots"], 3);
  EXPECT_EQ(info["state"], "paused");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(count("GUEST: hello"), 3u) << slurp(serial_);
  EXPECT_EQ(cmd("resume"), Json({{"return", Json::object()}}));
  ASSERT_TRUE(wait_count("GUEST: hello", 4, 60)) << slurp(serial_) << err();
  ASSERT_TRUE(wait_count("GUEST: tick 2\r\n", 4, 60)) << slurp(serial_);

  // A shutdown still ends it.
  EXPECT_EQ(cmd("shutdown", {{"timeout", 30}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), 0) << err();
  EXPECT_NE(err().find("guest powered off (ACPI S5) after a shutdown request"), std::string::npos)
      << err();
}

TEST_F(RebootE2eTest, DefaultPolicyEndsTheVmOnTheGuestsReset) {
  vmm_test::RunResult r =
      vmm_test::run_shell(std::string(VMM_BINARY) + " run --memory 64M --kernel " + VMM_TEST_GUEST +
                              " --cmdline nodisk",
                          dir_);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("GUEST: hello", r.out.find("GUEST: hello") + 1), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find("resetting"), std::string::npos) << r.err;
}

TEST_F(RebootE2eTest, OnRebootTakesOnlyItsTwoWords) {
  vmm_test::RunResult r = vmm_test::run_shell(
      std::string(VMM_BINARY) + " run --kernel " + VMM_TEST_GUEST + " --on-reboot reset", dir_);
  EXPECT_EQ(r.rc, vmm::kExitBadArguments);
  EXPECT_NE(r.err.find("--on-reboot must be restart or destroy, not 'reset'"), std::string::npos)
      << r.err;
}

}  // namespace
