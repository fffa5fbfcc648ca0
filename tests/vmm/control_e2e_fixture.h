// ControlE2eTest: `vmm run --control PATH` in the background with the freestanding test guest,
// its serial port in a file, and a client on the control socket; helpers to read the guest's
// "GUEST: tick N" counter and to wait for the VMM to end. Skips, with the reason, without a
// usable /dev/kvm.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "control_client.h"
#include "run_shell.h"

namespace vmm_test {

class ControlE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", F_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing";
    if (access("/dev/kvm", R_OK | W_OK) != 0)
      GTEST_SKIP() << "/dev/kvm is not read/write for this user";
    const char* d = std::getenv("IMG_TEST_TMPDIR");
    dir_ = std::string((d && *d) ? d : "/tmp") + "/vmm_ctl_e2e_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    // A unix socket path has at most 107 bytes: the socket lives in a short folder of its own.
    char tmpl[] = "/tmp/vmmctl.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    sock_dir_ = tmpl;
    sock_ = sock_dir_ + "/ctl.sock";
    serial_ = dir_ + "/serial.txt";
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (!sock_dir_.empty()) std::filesystem::remove_all(sock_dir_);
    if (!dir_.empty() && !HasFailure()) std::filesystem::remove_all(dir_);
  }

  // Starts vmm run in the background with the control socket and serial in dir_.
  void start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {VMM_BINARY,        "run",       "--memory", "64M", "--serial",
                                     "file:" + serial_, "--control", sock_};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      int out = open((dir_ + "/out.txt").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
      int err = open((dir_ + "/err.txt").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
      dup2(out, 1);
      dup2(err, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // The socket exists once set-up is done; connect and read the greeting.
    ASSERT_TRUE(ctl_.connect_to(sock_))
        << "no control socket; stderr: " << slurp(dir_ + "/err.txt");
    nlohmann::json g = nlohmann::json::parse(ctl_.greeting);
    ASSERT_EQ(g["greeting"]["protocol"], "vmm-control");
  }
  std::string read_line() { return ctl_.read_line(); }
  nlohmann::json cmd(const std::string& name, nlohmann::json args = nullptr) {
    nlohmann::json j = ctl_.cmd(name, args);
    EXPECT_FALSE(j.is_discarded()) << "no JSON reply to " << name;
    return j;
  }
  // The last "GUEST: tick N" on the serial port, or -1.
  long last_tick() {
    std::string s = slurp(serial_);
    size_t at = s.rfind("GUEST: tick ");
    if (at == std::string::npos) return -1;
    size_t end = s.find('\n', at);
    if (end == std::string::npos) {  // the line is being written: take the one before
      if (at == 0) return -1;
      at = s.rfind("GUEST: tick ", at - 1);
      if (at == std::string::npos) return -1;
    }
    return std::stol(s.substr(at + 12));
  }
  bool wait_ticks_above(long n, int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      if (last_tick() > n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  // Waits for vmm to end; its exit code, or -1 after `seconds`.
  int wait_exit(int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  std::string err() { return slurp(dir_ + "/err.txt"); }

  std::string dir_, sock_dir_, sock_, serial_;
  pid_t pid_ = -1;
  vmm_test::ControlClient ctl_;
};

}  // namespace vmm_test
