// End to end under KVM: the lifecycle commands on the freestanding test guest in its counter mode
// ("GUEST: tick N" on COM1, which `vmm start` relays to console.log and `vmm console`). define,
// start, list running, suspend stops the counter and resume restarts it, console shows the guest,
// setmem reaches the balloon, reboot and reset boot the VM again in the same process, shutdown
// ends it and
// list shows it shut off; kill -9 of the VM's processes shows shut off and a new start works;
// undefine keeps or removes the disk images. Skipped, with the reason, without /dev/kvm.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <regex>
#include <thread>

#include "run_shell.h"

namespace {

namespace fs = std::filesystem;
using vmm_test::run_shell;
using vmm_test::slurp;

class LifecycleE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", F_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing";
    if (access("/dev/kvm", R_OK | W_OK) != 0)
      GTEST_SKIP() << "/dev/kvm is not read/write for this user";
    if (std::string(VMM_TEST_GUEST).empty()) GTEST_SKIP() << "the test guest was not built";
    // Sockets live in DIR/run/NAME/: a short folder keeps them under 107 bytes.
    char t[] = "/tmp/vmmlife.XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
    state_ = dir_ + "/s";
  }
  void TearDown() override {
    if (dir_.empty()) return;
    // Whatever still runs goes (its supervisor leads its own process group).
    for (const char* n : {"demo", "other", "demo-clone"}) {
      run_shell(vmm("destroy", n), dir_);
    }
    fs::remove_all(dir_);
  }
  std::string vmm(const std::string& cmd, const std::string& rest = "") const {
    return std::string(VMM_BINARY) + " " + cmd + " --state-dir " + state_ + " " + rest;
  }
  vmm_test::RunResult ok(const std::string& cmd, const std::string& rest = "") {
    auto r = run_shell(vmm(cmd, rest), dir_);
    EXPECT_EQ(r.rc, 0) << cmd << " " << rest << ": " << r.err;
    return r;
  }
  void define(const std::string& name, const std::string& extra = "") {
    auto r = ok("define", "--name " + name + " --kernel " + VMM_TEST_GUEST +
                              " --memory 64M --cmdline 'nodisk counter' " + extra);
    EXPECT_EQ(r.out, "Domain '" + name + "' defined\n\n");
  }
  std::string run_path(const std::string& name, const std::string& f) const {
    return state_ + "/run/" + name + "/" + f;
  }
  long last_tick(const std::string& name) const {
    std::string s = slurp(run_path(name, "console.log"));
    size_t at = s.rfind("GUEST: tick ");
    if (at == std::string::npos) return -1;
    return std::strtol(s.c_str() + at + 12, nullptr, 10);
  }
  bool wait_ticks_above(const std::string& name, long n, double seconds) const {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (last_tick(name) > n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  std::string list(bool all) { return ok("list", all ? "--all" : "").out; }
  std::string pid_of(const std::string& name) const {
    std::string p = slurp(run_path(name, "pid"));
    return p.empty() ? p : p.substr(0, p.find('\n'));
  }

  std::string dir_, state_;
};

TEST_F(LifecycleE2eTest, DefineStartSuspendResumeRebootShutdown) {
  define("demo", "--balloon");
  EXPECT_EQ(list(true), " Id   Name   State\n-----------------------\n -    demo   shut off\n\n");
  EXPECT_EQ(list(false), " Id   Name   State\n--------------------\n\n");

  auto st = ok("start", "demo");
  EXPECT_EQ(st.out, "Domain 'demo' started\n\n");
  std::string pid = pid_of("demo");
  ASSERT_FALSE(pid.empty());
  // The Id is the pid of the vmm run process, which is alive and holds this VM's control socket.
  std::string cmdline = slurp("/proc/" + pid + "/cmdline");
  EXPECT_NE(cmdline.find(run_path("demo", "control.sock")), std::string::npos);
  // virsh's layout with the Id column as wide as the pid.
  ASSERT_GE(pid.size(), 2u);
  std::string w(pid.size() - 2, ' ');
  EXPECT_EQ(list(false), " Id" + w + "   Name   State\n" +
                             std::string(pid.size() + 3 + 7 + 10, '-') + "\n " + pid +
                             "   demo   running\n\n");
  EXPECT_TRUE(wait_ticks_above("demo", 2, 20)) << slurp(run_path("demo", "log"));

  auto again = run_shell(vmm("start", "demo"), dir_);
  EXPECT_EQ(again.rc, 1);
  EXPECT_EQ(again.err, "vmm: VM 'demo' is already running\n");
  auto undef = run_shell(vmm("undefine", "demo"), dir_);
  EXPECT_EQ(undef.rc, 1);
  EXPECT_EQ(undef.err, "vmm: VM 'demo' is running: shut it down or destroy it first\n");

  EXPECT_EQ(ok("suspend", "demo").out, "Domain 'demo' suspended\n\n");
  EXPECT_NE(list(false).find(" demo   paused\n"), std::string::npos);
  EXPECT_NE(ok("dominfo", "demo").out.find("State:          paused\n"), std::string::npos);
  long a = last_tick("demo");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(last_tick("demo"), a) << "the counter moved while suspended";
  auto twice = run_shell(vmm("suspend", "demo"), dir_);
  EXPECT_EQ(twice.rc, 1);
  EXPECT_EQ(twice.err, "vmm: VM 'demo': the VM is already paused\n");
  EXPECT_EQ(ok("resume", "demo").out, "Domain 'demo' resumed\n\n");
  EXPECT_TRUE(wait_ticks_above("demo", a + 2, 20)) << "the counter did not go on after resume";

  // The console shows the guest counting; the end of stdin detaches, the VM runs on.
  auto con = run_shell("sh -c \"sleep 0.4 | " + vmm("console", "demo") + "\"", dir_);
  EXPECT_EQ(con.rc, 0) << con.err;
  EXPECT_NE(con.out.find("GUEST: tick "), std::string::npos) << con.out;
  EXPECT_NE(con.err.find("Connected to domain 'demo'"), std::string::npos);

  EXPECT_EQ(ok("setmem", "demo 32M").out, "");
  auto info = ok("dominfo", "demo").out;
  EXPECT_NE(info.find("Id:             " + pid + "\n"), std::string::npos) << info;
  EXPECT_NE(info.find("State:          running\n"), std::string::npos) << info;
  EXPECT_NE(info.find("Max memory:     65536 KiB\nUsed memory:    32768 KiB\n"), std::string::npos)
      << info;
  auto big = run_shell(vmm("setmem", "demo 1G"), dir_);
  EXPECT_EQ(big.rc, 1);
  EXPECT_TRUE(big.err.starts_with(
      "vmm: VM 'demo': balloon: 'value' 1073741824 is more than the VM's memory"))
      << big.err;

  // reboot: the guest powers off on Ctrl-Alt-Del and the machine restarts in place: the same
  // process boots afresh (its hello line follows the old output in console.log). reset does it
  // at once, without the guest.
  auto booted_again = [&](size_t before) {
    for (int i = 0; i < 1000; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::string log = slurp(run_path("demo", "console.log"));
      if (log.size() > before &&
          log.find("GUEST: tick", log.find("GUEST: hello", before)) != std::string::npos &&
          list(false).find(" demo   running\n") != std::string::npos) {
        return true;
      }
    }
    return false;
  };
  size_t before = slurp(run_path("demo", "console.log")).size();
  EXPECT_EQ(ok("reboot", "demo").out, "Domain 'demo' is being rebooted\n\n");
  EXPECT_TRUE(booted_again(before)) << slurp(run_path("demo", "log"));
  EXPECT_EQ(pid_of("demo"), pid);
  EXPECT_NE(slurp(run_path("demo", "log"))
                .find("vmm: guest powered off (ACPI S5) after a reboot request: resetting the "
                      "machine (reboot 1)"),
            std::string::npos)
      << slurp(run_path("demo", "log"));
  before = slurp(run_path("demo", "console.log")).size();
  EXPECT_EQ(ok("reset", "demo").out, "Domain 'demo' was reset\n\n");
  EXPECT_TRUE(booted_again(before)) << slurp(run_path("demo", "log"));
  EXPECT_EQ(pid_of("demo"), pid);

  auto sd = ok("shutdown", "demo --timeout 20");
  EXPECT_EQ(sd.out, "Domain 'demo' is shut off\n\n");
  EXPECT_EQ(list(true), " Id   Name   State\n-----------------------\n -    demo   shut off\n\n");
  EXPECT_NE(slurp(run_path("demo", "log"))
                .find("vmm: guest powered off (ACPI S5) after a shutdown request"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(run_path("demo", "pid")));
  EXPECT_FALSE(fs::exists(run_path("demo", "control.sock")));
}

TEST_F(LifecycleE2eTest, KillNineShowsShutOffAndANewStartWorks) {
  define("demo");
  ok("start", "demo");
  std::string pid = pid_of("demo");
  ASSERT_FALSE(pid.empty());
  // The VM process and its supervisor die without a word: nothing cleans up.
  pid_t group = getpgid(static_cast<pid_t>(std::stol(pid)));
  ASSERT_GT(group, 1);
  ASSERT_EQ(kill(-group, SIGKILL), 0);
  for (int i = 0; i < 250 && fs::exists("/proc/" + pid + "/cmdline"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(fs::exists(run_path("demo", "pid"))) << "the stale pid file stays";
  EXPECT_TRUE(fs::exists(run_path("demo", "control.sock"))) << "the stale socket stays";
  EXPECT_EQ(list(true), " Id   Name   State\n-----------------------\n -    demo   shut off\n\n");
  auto s = run_shell(vmm("suspend", "demo"), dir_);
  EXPECT_EQ(s.rc, 1);
  EXPECT_EQ(s.err, "vmm: VM 'demo' is not running\n");

  EXPECT_EQ(ok("start", "demo").out, "Domain 'demo' started\n\n");
  EXPECT_NE(pid_of("demo"), pid);
  EXPECT_TRUE(wait_ticks_above("demo", -1, 20));
  // Only the VM process dies this time: its supervisor notices and ends too.
  ASSERT_EQ(kill(static_cast<pid_t>(std::stol(pid_of("demo"))), SIGKILL), 0);
  for (int i = 0; i < 250 && list(true).find("shut off") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(list(true).find(" -    demo   shut off\n"), std::string::npos);
  EXPECT_NE(slurp(run_path("demo", "log")).find("was killed by signal 9"), std::string::npos);

  // Two starts racing on one VM: the definition lock serialises them, one starts it.
  auto both =
      run_shell("sh -c '" + vmm("start", "demo") + " & " + vmm("start", "demo") + "; wait'", dir_);
  EXPECT_EQ(both.out, "Domain 'demo' started\n\n");
  EXPECT_EQ(both.err, "vmm: VM 'demo' is already running\n");
  EXPECT_EQ(ok("destroy", "demo").out, "Domain 'demo' destroyed\n\n");
  EXPECT_NE(list(true).find(" -    demo   shut off\n"), std::string::npos);
  auto d = run_shell(vmm("destroy", "demo"), dir_);
  EXPECT_EQ(d.rc, 1);
  EXPECT_EQ(d.err, "vmm: VM 'demo' is not running\n");
}

// A state directory so deep that DIR/run/NAME/control.sock passes sockaddr_un's 107 bytes (the
// /proc/self/fd route of img/unix_socket.h): start, the control socket and the supervisor's
// console socket work as in a short one.
TEST_F(LifecycleE2eTest, AStateDirectoryDeeperThanASocketPathHoldsWorks) {
  state_ = dir_ + "/" + std::string(60, 's') + "/" + std::string(60, 't');
  define("demo");
  ASSERT_GT(run_path("demo", "control.sock").size(), 107u);
  EXPECT_EQ(ok("start", "demo").out, "Domain 'demo' started\n\n");
  EXPECT_TRUE(fs::is_socket(run_path("demo", "control.sock")));
  EXPECT_TRUE(fs::is_socket(run_path("demo", "console.sock")));
  EXPECT_TRUE(wait_ticks_above("demo", -1, 20));
  EXPECT_EQ(ok("suspend", "demo").out, "Domain 'demo' suspended\n\n");
  EXPECT_NE(list(true).find(" demo   paused\n"), std::string::npos) << list(true);
  EXPECT_EQ(ok("resume", "demo").out, "Domain 'demo' resumed\n\n");
  EXPECT_NE(list(false).find(" demo   running\n"), std::string::npos) << list(false);
  EXPECT_EQ(ok("destroy", "demo").out, "Domain 'demo' destroyed\n\n");
}

TEST_F(LifecycleE2eTest, UndefineKeepsOrRemovesTheStorage) {
  for (const char* n : {"keep.qcow2", "gone.qcow2"}) {
    auto c = run_shell("qemu-img create -q -f qcow2 " + dir_ + "/" + n + " 16M", dir_);
    ASSERT_EQ(c.rc, 0) << c.err;
  }
  define("demo", "--disk " + dir_ + "/keep.qcow2,format=qcow2");
  define("other", "--disk " + dir_ + "/gone.qcow2,format=qcow2");
  std::string src = dir_ + "/gone.qcow2";
  EXPECT_EQ(
      ok("domblklist", "other").out,
      " Target   Source\n" + std::string(9 + src.size() + 3, '-') + "\n vda      " + src + "\n\n");
  // The guest runs and writes to its disk; the image stays sound (qemu-img check) after a
  // shutdown.
  ok("start", "other");
  ok("shutdown", "other --timeout 20");
  auto chk = run_shell("qemu-img check " + dir_ + "/gone.qcow2", dir_);
  EXPECT_EQ(chk.rc, 0) << chk.out << chk.err;

  EXPECT_EQ(ok("undefine", "demo").out, "Domain 'demo' has been undefined\n\n");
  EXPECT_TRUE(fs::exists(dir_ + "/keep.qcow2"));
  EXPECT_EQ(ok("undefine", "other --remove-all-storage").out,
            "Storage volume 'vda'(" + dir_ +
                "/gone.qcow2) is removed.\nDomain 'other' has been "
                "undefined\n\n");
  EXPECT_FALSE(fs::exists(dir_ + "/gone.qcow2"));
  EXPECT_EQ(list(true), " Id   Name   State\n--------------------\n\n");
  auto u = run_shell(vmm("undefine", "demo"), dir_);
  EXPECT_EQ(u.rc, 1);
  EXPECT_EQ(u.err, "vmm: no VM named 'demo' in " + state_ + "\n");
}

// And blockresize grows the running VM's disk (virsh's output and size units), refuses what it
// cannot do with one line, and the image keeps its new size and stays clean after the shutdown.
TEST_F(LifecycleE2eTest, CreateWithA1GQcow2DiskStartsBlockresizeGrowsItAndItsImageStaysClean) {
  auto c = ok("create", std::string("--name demo --kernel ") + VMM_TEST_GUEST +
                            " --memory 64M --cmdline counter --disk size=1G,format=qcow2 --start");
  std::string img = state_ + "/images/demo-vda.qcow2";
  EXPECT_EQ(c.out, "Disk 'vda': created " + img +
                       " (qcow2, 1073741824 bytes)\nDomain 'demo' defined\n\nDomain 'demo' "
                       "started\n\n");
  EXPECT_NE(list(false).find(" demo   running\n"), std::string::npos);
  EXPECT_TRUE(wait_ticks_above("demo", -1, 20));
  // The guest found its 1 GiB disk (virtio-blk capacity in 512-byte sectors).
  EXPECT_NE(slurp(run_path("demo", "console.log")).find("GUEST: capacity 2097152 sectors"),
            std::string::npos)
      << slurp(run_path("demo", "console.log"));
  EXPECT_EQ(ok("blockresize", "demo vda 2G").out, "Block device 'vda' is resized\n");
  EXPECT_EQ(ok("blockresize", "demo " + img + " 2202010").out,  // KiB, rounded up to 512 B
            "Block device '" + img + "' is resized\n");
  auto none = run_shell(vmm("blockresize", "demo vdb 4G"), dir_);
  EXPECT_EQ(none.rc, 1);
  EXPECT_EQ(none.err, "vmm: VM 'demo' has no disk 'vdb' (vmm domblklist demo lists them)\n");
  auto shrink = run_shell(vmm("blockresize", "demo vda 1G"), dir_);
  EXPECT_EQ(shrink.rc, 1);
  EXPECT_NE(shrink.err.find("only growing is supported"), std::string::npos) << shrink.err;
  EXPECT_EQ(std::count(shrink.err.begin(), shrink.err.end(), '\n'), 1) << shrink.err;
  EXPECT_EQ(run_shell(vmm("blockresize", "demo vda 1X"), dir_).rc, 2);
  EXPECT_TRUE(wait_ticks_above("demo", last_tick("demo"), 20)) << "the guest stopped";
  ok("shutdown", "demo --timeout 20");
  auto chk = run_shell("qemu-img check " + img, dir_);
  EXPECT_EQ(chk.rc, 0) << chk.out << chk.err;
  auto info = run_shell("qemu-img info --output=json " + img, dir_);
  EXPECT_NE(info.out.find("\"virtual-size\": 2254858240"), std::string::npos) << info.out;
  auto off = run_shell(vmm("blockresize", "demo vda 3G"), dir_);
  EXPECT_EQ(off.rc, 1);
  EXPECT_EQ(off.err, "vmm: VM 'demo' is not running: grow a shut-off VM's image with img resize " +
                         img + " SIZE\n");
  ok("undefine", "demo --remove-all-storage");
  EXPECT_FALSE(fs::exists(img));
}

// virt-clone's contract: the source must be shut off and is left untouched; each clone gets its
// own disk (a full copy, or a linked overlay), name, UUID; the clone boots and writes to its
// disk without changing a byte of the source's image; qemu-img check is clean on all of them.
TEST_F(LifecycleE2eTest, CloneCopiesAShutOffVmAndLeavesTheSourceUntouched) {
  std::string src = dir_ + "/demo.qcow2";
  ASSERT_EQ(run_shell("qemu-img create -q -f qcow2 " + src + " 64M", dir_).rc, 0);
  ASSERT_EQ(run_shell("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' " + src, dir_).rc, 0);
  define("demo", "--disk " + src + ",format=qcow2 --net tap=tapx,mac=02:00:00:00:00:01");
  std::string sum = run_shell("sha256sum " + src, dir_).out;

  auto no_auto = run_shell(vmm("clone", "--original demo"), dir_);
  EXPECT_EQ(no_auto.rc, 1);
  EXPECT_EQ(no_auto.err, "vmm: VM 'demo' has writable disks: give --auto-clone to copy them\n");
  auto c = ok("clone", "--original demo --auto-clone");
  std::string copy = dir_ + "/demo-clone-vda.qcow2";
  EXPECT_EQ(c.out,
            "Cloning " + src + " to " + copy +
                "\nDomain 'demo-clone' defined\n\nClone 'demo-clone' created successfully.\n");
  EXPECT_EQ(run_shell("qemu-img compare " + src + " " + copy, dir_).rc, 0) << "not the same data";
  auto l = ok("clone", "--original demo --auto-clone --linked");
  std::string linked = dir_ + "/demo-clone1-vda.qcow2";
  EXPECT_NE(l.out.find("Clone 'demo-clone1' created successfully."), std::string::npos) << l.out;
  auto li = run_shell("qemu-img info --output=json " + linked, dir_);
  EXPECT_NE(li.out.find("\"backing-filename\": \"" + src + "\""), std::string::npos) << li.out;

  // New identity: UUID and MAC differ, the tap is one of its own (created at start).
  std::string a = slurp(state_ + "/demo.json"), b = slurp(state_ + "/demo-clone.json");
  std::regex uuid("\"uuid\": \"([0-9a-f-]+)\"");
  std::smatch ma, mb;
  ASSERT_TRUE(std::regex_search(a, ma, uuid) && std::regex_search(b, mb, uuid));
  EXPECT_NE(ma[1], mb[1]);
  EXPECT_EQ(b.find("02:00:00:00:00:01"), std::string::npos);
  EXPECT_EQ(b.find("tapx"), std::string::npos);
  EXPECT_NE(ok("domblklist", "demo-clone").out.find(" vda      " + copy + "\n"), std::string::npos);

  // The clone boots (without its NIC: no taps in a test) and writes to its own disk.
  ok("define", "--name demo-clone --kernel " + std::string(VMM_TEST_GUEST) +
                   " --memory 64M --cmdline counter --disk " + copy + ",format=qcow2");
  ok("start", "demo-clone");
  EXPECT_TRUE(wait_ticks_above("demo-clone", -1, 20));
  EXPECT_NE(slurp(run_path("demo-clone", "console.log")).find("GUEST: PASS"), std::string::npos)
      << slurp(run_path("demo-clone", "console.log"));
  auto running = run_shell(vmm("clone", "--original demo-clone --auto-clone"), dir_);
  EXPECT_EQ(running.rc, 1);
  EXPECT_EQ(running.err,
            "vmm: VM 'demo-clone' is running: shut it down first (its disks would change under the "
            "copy)\n");
  ok("shutdown", "demo-clone --timeout 20");
  EXPECT_EQ(run_shell("sha256sum " + src, dir_).out, sum) << "the source's image changed";
  for (const std::string& f : {src, copy, linked}) {
    auto chk = run_shell("qemu-img check " + f, dir_);
    EXPECT_EQ(chk.rc, 0) << f << ": " << chk.out << chk.err;
  }
  EXPECT_NE(run_shell("qemu-img compare " + src + " " + copy, dir_).rc, 0)
      << "the clone's guest wrote nothing to its own disk";
}

// A definition keeps --seccomp, --user and --group: `vmm start` runs the VM as that user under
// the filters (root opened /dev/kvm and the sockets first), and after destroy the runtime files
// are gone although the VM's own process could not remove them from the root-owned state dir.
TEST_F(LifecycleE2eTest, ADefinedUserAndSeccompModeAreWhatTheVmRunsWith) {
  if (getuid() != 0) GTEST_SKIP() << "needs root to drop from (running as uid " << getuid() << ")";
  // "log": the filters are installed (and shown in /proc) but only log, so the test also runs
  // in the sanitizer build, whose runtime makes calls no allow-list holds (machine/config.h).
  define("demo", "--user 65534 --group 65534 --seccomp log");
  std::string def = slurp(state_ + "/demo.json");
  EXPECT_NE(def.find(R"("user": "65534")"), std::string::npos) << def;
  EXPECT_NE(def.find(R"("seccomp": "log")"), std::string::npos) << def;
  ok("start", "demo");
  EXPECT_TRUE(wait_ticks_above("demo", 2, 20)) << slurp(run_path("demo", "log"));
  std::string pid = pid_of("demo");
  ASSERT_FALSE(pid.empty());
  std::string status = slurp("/proc/" + pid + "/status");
  EXPECT_NE(status.find("Uid:\t65534\t65534\t65534\t65534\n"), std::string::npos) << status;
  EXPECT_NE(status.find("Gid:\t65534\t65534\t65534\t65534\n"), std::string::npos) << status;
  EXPECT_NE(status.find("Seccomp:\t2\n"), std::string::npos) << status;
  EXPECT_NE(ok("dominfo", "demo").out.find("State:          running\n"), std::string::npos);
  EXPECT_EQ(ok("destroy", "demo").out, "Domain 'demo' destroyed\n\n");
  for (const char* f : {"control.sock", "pid"}) {
    EXPECT_FALSE(fs::exists(run_path("demo", f))) << f << " left behind";
  }
  auto bad = run_shell(
      vmm("define", "--name other --kernel " + std::string(VMM_TEST_GUEST) + " --seccomp strict"),
      dir_);
  EXPECT_EQ(bad.rc, 2) << bad.err;
  EXPECT_NE(bad.err.find("--seccomp must be off, log or on"), std::string::npos) << bad.err;
}

}  // namespace
