// End to end under KVM: `vmm run --control PATH` with the freestanding test guest in its counter
// mode ("GUEST: tick N" on COM1). pause stops the counter and resume restarts it, info and
// disk-stats report what the command line and the guest's disk checks did, shutdown reaches the
// guest (Ctrl-Alt-Del on the i8042 -> the guest powers off), destroy and a shutdown timeout end
// the VM with exit code 6, SIGTERM with 130, and a client that vanishes does not kill the VM.
// Skipped, with the reason, when /dev/kvm is missing or not accessible.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "control_client.h"
#include "control_e2e_fixture.h"
#include "img/bytes.h"
#include "machine/config.h"
#include "run_shell.h"

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using vmm_test::ControlE2eTest;
using vmm_test::slurp;

TEST_F(ControlE2eTest, PauseStopsTheGuestResumeRestartsItInfoAndStatsAreSane) {
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }
  std::string img = dir_ + "/disk.qcow2";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f qcow2 " + img + " 64M").c_str()));
  // The pattern the guest's virtio-blk checks expect to find (as in e2e_guest_test.cc).
  ASSERT_EQ(
      0, std::system(("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' " + img + " >/dev/null").c_str()));
  ASSERT_NO_FATAL_FAILURE(
      start({"--kernel", VMM_TEST_GUEST, "--cpus", "2", "--cmdline", "counter", "--disk", img}));
  ASSERT_TRUE(wait_ticks_above(5, 60)) << slurp(serial_) << err();
  ASSERT_NE(slurp(serial_).find("GUEST: PASS"), std::string::npos) << slurp(serial_);

  Json info = cmd("info")["return"];
  EXPECT_EQ(info["state"], "running");
  EXPECT_EQ(info["vcpus"], 2);
  EXPECT_EQ(info["memory"], 64 << 20);
  EXPECT_GT(info["uptime_s"].get<double>(), 0);
  ASSERT_EQ(info["disks"].size(), 1u);
  EXPECT_EQ(info["disks"][0]["path"], img);
  EXPECT_EQ(info["disks"][0]["format"], "qcow2");
  EXPECT_EQ(info["disks"][0]["size"], 64 << 20);
  EXPECT_EQ(info["disks"][0]["read_only"], false);
  EXPECT_NE(std::find(info["devices"].begin(), info["devices"].end(), "virtio-blk"),
            info["devices"].end());

  // The guest's virtio-blk checks read, wrote and flushed (guest.c / virtio_blk.c).
  Json st = cmd("disk-stats")["return"]["disks"][0];
  EXPECT_GT(st["reads"].get<uint64_t>(), 0u);
  EXPECT_GT(st["writes"].get<uint64_t>(), 0u);
  EXPECT_GT(st["write_bytes"].get<uint64_t>(), 0u);
  EXPECT_GT(st["flushes"].get<uint64_t>(), 0u);
  EXPECT_EQ(st["errors"], 0);

  EXPECT_EQ(cmd("pause"), Json({{"return", Json::object()}}));
  EXPECT_EQ(cmd("info")["return"]["state"], "paused");
  long a = last_tick();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // ~15 ticks when running
  EXPECT_EQ(last_tick(), a) << "the counter moved while paused";
  EXPECT_EQ(cmd("pause")["error"]["class"], "WrongState");
  EXPECT_EQ(cmd("shutdown")["error"]["class"], "WrongState");
  // The disk was flushed by pause: qemu-img can read it consistently while the VM is paused.
  EXPECT_EQ(0, std::system(("qemu-img check -q -U " + img).c_str()));

  // block_resize while paused: done, and the VM stays paused.
  EXPECT_EQ(cmd("block_resize", {{"index", 0}, {"size", 96 << 20}}),
            Json({{"return", {{"index", 0}, {"size", 96 << 20}}}}));
  EXPECT_EQ(cmd("info")["return"]["state"], "paused");

  EXPECT_EQ(cmd("resume"), Json({{"return", Json::object()}}));
  EXPECT_TRUE(wait_ticks_above(a + 3, 20)) << "the counter did not go on after resume";
  EXPECT_EQ(cmd("resume")["error"]["class"], "WrongState");
  EXPECT_EQ(cmd("info")["return"]["state"], "running");

  // block_resize while running; bad requests change nothing.
  EXPECT_EQ(cmd("block_resize", {{"index", 0}, {"size", 128 << 20}}),
            Json({{"return", {{"index", 0}, {"size", 128 << 20}}}}));
  EXPECT_EQ(cmd("info")["return"]["disks"][0]["size"], 128 << 20);
  for (Json bad :
       {Json{{"index", 1}, {"size", 256 << 20}}, Json{{"index", 0}, {"size", 64 << 20}},
        Json{{"index", 0}, {"size", (256 << 20) + 1}}, Json{{"index", 0}, {"size", "1G"}},
        Json{{"index", 0}}, Json{{"size", 256 << 20}},
        Json{{"index", 0}, {"size", 256 << 20}, {"shrink", true}},
        Json{{"lun", 0}, {"size", 256 << 20}},  // no SCSI LUNs here
        Json{{"index", 0}, {"lun", 0}, {"size", 256 << 20}}}) {
    Json r = cmd("block_resize", bad);
    EXPECT_EQ(r["error"]["class"], "InvalidArgument") << bad << " -> " << r;
  }
  EXPECT_EQ(cmd("info")["return"]["disks"][0]["size"], 128 << 20);
  long b = last_tick();
  EXPECT_TRUE(wait_ticks_above(b + 2, 20)) << "the guest stopped after block_resize";

  EXPECT_EQ(cmd("destroy"), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(20), 6) << err();
  EXPECT_NE(err().find("destroyed over the control socket"), std::string::npos) << err();
  EXPECT_FALSE(fs::exists(sock_)) << "the socket is removed when the VM ends";
  EXPECT_EQ(0, std::system(("qemu-img check -q " + img).c_str()));
  auto info_out = vmm_test::run_shell("qemu-img info --output=json " + img, dir_);
  EXPECT_NE(info_out.out.find("\"virtual-size\": 134217728"), std::string::npos) << info_out.out;
}

TEST_F(ControlE2eTest, ShutdownReachesTheGuestWhichPowersOff) {
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "nodisk counter"}));
  ASSERT_TRUE(wait_ticks_above(2, 60)) << slurp(serial_) << err();
  EXPECT_EQ(cmd("balloon", {{"value", 1 << 20}})["error"]["class"], "WrongState");  // no --balloon
  EXPECT_EQ(cmd("shutdown", {{"timeout", 30}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), 0) << err();
  EXPECT_NE(slurp(serial_).find("GUEST: ctrl-alt-del, powering off"), std::string::npos);
  EXPECT_NE(err().find("guest powered off (ACPI S5) after a shutdown request"), std::string::npos)
      << err();
}

// The balloon's target is set at start and over the socket, and reported in QMP's terms (the
// test guest has no balloon driver, so the balloon stays empty and `actual` is all of memory);
// bad values are refused; pause quiesces the balloon and a virtio-scsi LUN like every device.
TEST_F(ControlE2eTest, BalloonTargetIsSetAndQueriedAndPauseCoversEveryDevice) {
  std::string lun = dir_ + "/lun.qcow2";
  ASSERT_EQ(vmm_test::run_shell("qemu-img create -q -f qcow2 " + lun + " 16M", dir_).rc, 0);
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "nodisk counter",
                                 "--balloon", "target=48M", "--scsi", lun}));
  ASSERT_TRUE(wait_ticks_above(2, 60)) << slurp(serial_) << err();
  constexpr uint64_t kMiB = 1 << 20;
  Json q = cmd("query-balloon")["return"];
  EXPECT_EQ(q["target"], 48 * kMiB) << q;
  EXPECT_EQ(q["actual"], 64 * kMiB) << q;
  EXPECT_EQ(q["balloon_pages"], 0) << q;
  EXPECT_EQ(cmd("balloon", {{"value", 32 * kMiB}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(cmd("query-balloon")["return"]["target"], 32 * kMiB);
  EXPECT_EQ(cmd("balloon", {{"value", 0}})["error"]["class"], "InvalidArgument");
  Json big = cmd("balloon", {{"value", 65 * kMiB}});
  EXPECT_EQ(big["error"]["class"], "InvalidArgument");
  EXPECT_NE(big["error"]["desc"].get<std::string>().find("more than the VM's memory"),
            std::string::npos)
      << big;
  EXPECT_EQ(cmd("balloon", {{"value", "32M"}})["error"]["class"], "InvalidArgument");
  EXPECT_EQ(cmd("balloon")["error"]["class"], "InvalidArgument");
  EXPECT_EQ(cmd("balloon", {{"value", kMiB}, {"force", true}})["error"]["class"],
            "InvalidArgument");
  Json devices = cmd("info")["return"]["devices"];
  for (const char* d : {"virtio-balloon", "virtio-scsi"}) {
    EXPECT_NE(std::find(devices.begin(), devices.end(), d), devices.end()) << d << " " << devices;
  }
  // The SCSI LUN grows by "lun" (this guest has no SCSI driver: the image grows, and a driver
  // that starts later reads the new capacity); a shrink or a LUN that is not there is refused.
  EXPECT_EQ(cmd("block_resize", {{"lun", 0}, {"size", 24 * kMiB}}),
            Json({{"return", {{"lun", 0}, {"size", 24 * kMiB}}}}));
  EXPECT_EQ(cmd("block_resize", {{"lun", 0}, {"size", 16 * kMiB}})["error"]["class"],
            "InvalidArgument");
  EXPECT_EQ(cmd("block_resize", {{"lun", 1}, {"size", 32 * kMiB}})["error"]["class"],
            "InvalidArgument");
  EXPECT_EQ(cmd("pause"), Json({{"return", Json::object()}})) << err();
  long at = last_tick();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LE(last_tick(), at + 1);
  EXPECT_EQ(cmd("resume"), Json({{"return", Json::object()}}));
  EXPECT_TRUE(wait_ticks_above(last_tick(), 30)) << slurp(serial_);
  EXPECT_EQ(cmd("destroy"), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), 6) << err();
  auto info = vmm_test::run_shell("qemu-img info --output=json " + lun, dir_);
  EXPECT_NE(info.out.find("\"virtual-size\": 25165824"), std::string::npos) << info.out;
}

// A guest that ignores Ctrl-Alt-Del (it spins: `jmp .`) is destroyed when the timeout runs out;
// a paused VM can be destroyed; a client that vanishes mid-reply leaves the VM running.
TEST_F(ControlE2eTest, ShutdownTimeoutDestroysAndVanishingClientsDoNotKillTheVm) {
  std::vector<uint8_t> f(0x1000, 0);
  std::memcpy(&f[0],
              "\x7f"
              "ELF\x02\x01\x01",
              7);
  f[16] = 2;
  f[18] = 62;
  img::store_le64(&f[24], 0x200000);
  img::store_le64(&f[32], 64);
  f[54] = 56;
  f[56] = 1;
  img::store_le32(&f[64], 1);
  img::store_le64(&f[64 + 8], 0x800);
  img::store_le64(&f[64 + 24], 0x200000);
  img::store_le64(&f[64 + 32], 2);
  img::store_le64(&f[64 + 40], 2);
  f[0x800] = 0xeb;  // jmp .
  f[0x801] = 0xfe;
  std::string spin = dir_ + "/spin.elf";
  std::ofstream(spin, std::ios::binary).write(reinterpret_cast<char*>(f.data()), f.size());
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", spin}));

  // Many requests, then gone without reading: vmm writes into a dead socket (EPIPE, no SIGPIPE).
  std::string many;
  for (int i = 0; i < 5000; ++i) many += "{\"execute\":\"info\"}\n";
  ASSERT_EQ(write(ctl_.fd, many.data(), many.size()), static_cast<ssize_t>(many.size()));
  ctl_.close_fd();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(wait_exit(0), -1) << "vmm died: " << err();
  // Reconnect (the old client may take a moment to be dropped).
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(ctl_.connect_to(sock_, 1));
    if (ctl_.greeting.find("greeting") != std::string::npos) break;
    ctl_.close_fd();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(ctl_.fd, 0);
  EXPECT_EQ(cmd("bogus")["error"]["class"], "CommandNotFound");
  EXPECT_EQ(cmd("shutdown", {{"timeout", "soon"}})["error"]["class"], "InvalidArgument");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(cmd("shutdown", {{"timeout", 0.5}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(20), 6) << err();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.5);
  EXPECT_NE(err().find("the guest did not shut down within 0.5 s: destroyed"), std::string::npos)
      << err();
}

TEST_F(ControlE2eTest, SigtermStopsAPausedVmCleanly) {
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "nodisk counter"}));
  ASSERT_TRUE(wait_ticks_above(1, 60)) << slurp(serial_) << err();
  EXPECT_EQ(cmd("pause"), Json({{"return", Json::object()}}));
  kill(pid_, SIGTERM);
  EXPECT_EQ(wait_exit(20), 130) << err();
  EXPECT_NE(err().find("stopped by signal 15"), std::string::npos) << err();
}

}  // namespace

namespace {

// "Uid:\t65534\t65534\t65534\t65534" and the like from /proc/PID/status.
// A sanitizer build's vmm runs without filters unless asked (vmm/machine/config.h).
const bool kFiltersByDefault = std::string(vmm::kDefaultSeccomp) == "on";

std::string status_line(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.starts_with(key + ":")) return line;
  }
  return "";
}

}  // namespace

// --user/--group: root opens /dev/kvm, a root-only (0600) disk image and the sockets, then every
// id of the process (real, effective, saved, file system; the supplementary groups) is the
// unprivileged one while the guest runs, does its disk I/O and obeys the control socket.
TEST_F(ControlE2eTest, UserFlagDropsRootAfterEverythingIsOpen) {
  if (getuid() != 0) GTEST_SKIP() << "needs root to drop from (running as uid " << getuid() << ")";
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }
  std::string img = dir_ + "/root-only.raw";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f raw " + img +
                            " 64M && qemu-io -f raw -c "
                            "'write -P 0x5a 0 1M' " +
                            img + " >/dev/null && chmod 600 " + img)
                               .c_str()));
  // The socket folder is the VM user's, so that it can remove its socket when it ends.
  ASSERT_EQ(0, chown(sock_dir_.c_str(), 65534, 65534));
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "counter", "--disk",
                                 img + ",format=raw", "--user", "65534", "--group", "65534"}));
  ASSERT_TRUE(wait_ticks_above(3, 60)) << slurp(serial_) << err();
  EXPECT_NE(slurp(serial_).find("GUEST: PASS"), std::string::npos) << slurp(serial_);
  EXPECT_EQ(status_line(pid_, "Uid"), "Uid:\t65534\t65534\t65534\t65534");
  EXPECT_EQ(status_line(pid_, "Gid"), "Gid:\t65534\t65534\t65534\t65534");
  EXPECT_EQ(status_line(pid_, "Groups"), "Groups:\t65534 ");
  if (kFiltersByDefault) {
    EXPECT_EQ(status_line(pid_, "Seccomp"), "Seccomp:\t2") << "filters are on by default";
  }
  Json st = cmd("disk-stats")["return"]["disks"][0];
  EXPECT_GT(st["writes"].get<uint64_t>(), 0u);
  EXPECT_EQ(st["errors"], 0);
  EXPECT_EQ(cmd("shutdown", {{"timeout", 30}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), 0) << err();
  EXPECT_FALSE(fs::exists(sock_));
}

// Every thread is named for what it runs (top -H, ps -L) and runs under a seccomp filter: the
// main loop, both vCPUs, the spawner, the disk's device thread and libimg's workers.
TEST_F(ControlE2eTest, ThreadsAreNamedAndEachRunsUnderAFilter) {
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }
  std::string img = dir_ + "/disk.raw";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f raw " + img +
                            " 64M && qemu-io -f raw -c "
                            "'write -P 0x5a 0 1M' " +
                            img + " >/dev/null")
                               .c_str()));
  ASSERT_NO_FATAL_FAILURE(start({"--kernel", VMM_TEST_GUEST, "--cmdline", "counter", "--cpus", "2",
                                 "--disk", img + ",format=raw"}));
  ASSERT_TRUE(wait_ticks_above(3, 60)) << slurp(serial_) << err();
  std::multiset<std::string> names;
  std::string report;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/task")) {
    std::string comm = slurp(t.path() / "comm");
    if (!comm.empty() && comm.back() == '\n') comm.pop_back();
    names.insert(comm);
    std::string seccomp;
    std::ifstream f(t.path() / "status");
    for (std::string l; std::getline(f, l);) {
      if (l.starts_with("Seccomp:")) seccomp = l;
    }
    report += comm + " (" + seccomp + "); ";
    if (kFiltersByDefault) {
      EXPECT_EQ(seccomp, "Seccomp:\t2") << comm << ": " << report;
    }
  }
  EXPECT_EQ(names.count("vcpu 0"), 1u) << report;
  EXPECT_EQ(names.count("vcpu 1"), 1u) << report;
  EXPECT_EQ(names.count("vmm-spawner"), 1u) << report;
  EXPECT_EQ(names.count("virtio-blk"), 1u) << report;
  // libimg's workers start up front only under filters (a filtered thread cannot create them).
  if (kFiltersByDefault) {
    EXPECT_GE(names.count("img-worker"), 1u) << report;
  }
  EXPECT_EQ(names.count("vmm"), 1u) << "the main thread keeps the program's name: " << report;
  EXPECT_EQ(cmd("shutdown", {{"timeout", 30}}), Json({{"return", Json::object()}}));
  EXPECT_EQ(wait_exit(30), 0) << err();
}

TEST(VmmUserFlag, UnknownUserOrGroupIsAClearError) {
  std::string run = std::string(VMM_BINARY) + " run --kernel " + VMM_TEST_GUEST +
                    " --memory 64M --cmdline nodisk ";
  auto r = vmm_test::run_shell(run + "--user no-such-user-here", "/tmp");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--user: no such user 'no-such-user-here'"), std::string::npos) << r.err;
  r = vmm_test::run_shell(run + "--user 65534 --group no-such-group-here", "/tmp");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--group: no such group"), std::string::npos) << r.err;
  r = vmm_test::run_shell(run + "--group 65534", "/tmp");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--group needs --user"), std::string::npos) << r.err;
  r = vmm_test::run_shell(run + "--seccomp strict", "/tmp");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--seccomp must be off, log or on"), std::string::npos) << r.err;
}
