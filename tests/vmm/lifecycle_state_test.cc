// The state directory's pieces that need no KVM: virsh's table and field layouts (compared with
// what virsh 9 prints: libvirt's tools/vsh-table.c), the VM lock that tells a running VM from one
// whose vmm died, and the pid check that refuses a pid file naming some other process. Then the
// commands on VMs that do not run: unknown VM, stale runtime files, bad definition files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "lifecycle/format.h"
#include "lifecycle/state_dir.h"
#include "run_shell.h"

namespace vmm::lifecycle {
namespace {

namespace fs = std::filesystem;

TEST(LifecycleFormatTest, ListTableIsVirshs) {
  // virsh list's layout (vsh-table: " cell" + pad to width + 2, dashes = sum(w + 3)), as in
  // libvirt's manual: " Id   Name       State\n--------------------------\n 0    Domain-0 running".
  EXPECT_EQ(format_table({"Id", "Name", "State"}, {{"0", "Domain-0", "running"}}),
            " Id   Name       State\n"
            "--------------------------\n"
            " 0    Domain-0   running\n");
  EXPECT_EQ(format_table({"Id", "Name", "State"},
                         {{"1", "fedora", "running"}, {"-", "win10-long", "shut off"}}),
            " Id   Name         State\n"
            "-----------------------------\n"
            " 1    fedora       running\n"
            " -    win10-long   shut off\n");
  EXPECT_EQ(format_table({"Id", "Name", "State"}, {}),
            " Id   Name   State\n"
            "--------------------\n");
}

TEST(LifecycleFormatTest, DominfoFieldsAreVirshs) {
  EXPECT_EQ(format_fields({{"Id", "-"}, {"Max memory", kib(256u << 20)}}),
            "Id:             -\n"
            "Max memory:     262144 KiB\n");
}

class LifecycleStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/vmmstate.XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
    sd_.root = dir_ + "/state";
    fs::create_directories(sd_.run_dir("demo"));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
  StateDir sd_;
};

TEST_F(LifecycleStateTest, TheLockTellsARunningVmFromADeadOne) {
  EXPECT_FALSE(lock_held(sd_.lock("demo"))) << "no lock file: not running";
  {
    auto held = FileLock::acquire(sd_.lock("demo"), LOCK_EX, true);
    ASSERT_TRUE(held);
    EXPECT_TRUE(lock_held(sd_.lock("demo")));
    // A second exclusive attempt, as a racing vmm start makes, is refused.
    auto again = FileLock::acquire(sd_.lock("demo"), LOCK_EX | LOCK_NB, true);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().sys_errno(), EWOULDBLOCK);
  }
  EXPECT_FALSE(lock_held(sd_.lock("demo"))) << "the holder closed it: not running";
  // A holder that dies by SIGKILL releases it too: that is what makes kill -9 show "shut off".
  pid_t child = fork();
  if (child == 0) {
    auto l = FileLock::acquire(sd_.lock("demo"), LOCK_EX, true);
    pause();
    _exit(0);
  }
  for (int i = 0; i < 500 && !lock_held(sd_.lock("demo")); ++i) usleep(2000);
  EXPECT_TRUE(lock_held(sd_.lock("demo")));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_FALSE(lock_held(sd_.lock("demo")));
}

TEST_F(LifecycleStateTest, APidFileIsTrustedOnlyForOurVmmRun) {
  EXPECT_FALSE(read_pid(sd_.pid("demo"))) << "missing file";
  ASSERT_TRUE(write_pid(sd_.pid("demo"), getpid()));
  ASSERT_EQ(read_pid(sd_.pid("demo")), getpid());
  // This test binary is alive but is not `vmm run` with this control socket.
  EXPECT_FALSE(is_vmm_run(getpid(), sd_.control("demo")));
  EXPECT_FALSE(is_vmm_run(1, sd_.control("demo")));
  // A pid that died: reaped, so /proc has no entry.
  pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  EXPECT_FALSE(is_vmm_run(child, sd_.control("demo")));
  for (const char* junk : {"", "abc\n", "-5\n", "99999999999\n", "0\n"}) {
    std::ofstream(sd_.pid("demo")) << junk;
    EXPECT_FALSE(read_pid(sd_.pid("demo"))) << "'" << junk << "'";
  }
}

TEST_F(LifecycleStateTest, NamesListsDefinitionsSorted) {
  for (const char* f : {"b.json", "a.json", ".a.json.tmp", "notes.txt"}) {
    std::ofstream(sd_.root + "/" + f) << "{}";
  }
  EXPECT_EQ(sd_.names(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(LifecycleStateTest, DefaultStateDirFollowsXdg) {
  const char* old = std::getenv("XDG_STATE_HOME");
  std::string saved = old ? old : "";
  setenv("XDG_STATE_HOME", "/x/state", 1);
  EXPECT_EQ(default_state_dir().value_or(""), "/x/state/vmm");
  setenv("XDG_STATE_HOME", "relative", 1);  // invalid per the XDG spec: ignored
  EXPECT_NE(default_state_dir().value_or(""), "relative/vmm");
  if (old)
    setenv("XDG_STATE_HOME", saved.c_str(), 1);
  else
    unsetenv("XDG_STATE_HOME");
}

// The vmm binary on VMs that do not run: one line "vmm: ..." and a non-zero exit each.
TEST_F(LifecycleStateTest, CommandsOnMissingOrStoppedVmsSayWhy) {
  std::string v = std::string(VMM_BINARY) + " ";
  std::string o = " --state-dir " + sd_.root;
  for (const char* cmd : {"start", "shutdown", "reboot", "reset", "destroy", "suspend", "resume",
                          "undefine", "dominfo", "domblklist", "console"}) {
    auto r = vmm_test::run_shell(v + cmd + o + " ghost", dir_);
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(r.err, "vmm: no VM named 'ghost' in " + sd_.root + "\n") << cmd;
  }
  // A defined VM that is shut off, with runtime files a killed vmm left behind (a pid that is not
  // a vmm, a control socket file nobody serves).
  auto d = vmm_test::run_shell(v + "define" + o + " --name demo --kernel /k --memory 32M", dir_);
  ASSERT_EQ(d.rc, 0) << d.err;
  EXPECT_EQ(d.out, "Domain 'demo' defined\n\n");
  ASSERT_TRUE(write_pid(sd_.pid("demo"), 1));
  std::ofstream(sd_.control("demo")) << "";
  for (const char* cmd :
       {"shutdown", "reboot", "reset", "destroy", "suspend", "resume", "console"}) {
    auto r = vmm_test::run_shell(v + cmd + o + " demo", dir_);
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(r.err, "vmm: VM 'demo' is not running\n") << cmd;
  }
  auto l = vmm_test::run_shell(v + "list --all" + o, dir_);
  EXPECT_EQ(l.out, " Id   Name   State\n-----------------------\n -    demo   shut off\n\n");
  auto s = vmm_test::run_shell(v + "setmem" + o + " demo 16M", dir_);
  EXPECT_EQ(s.err, "vmm: VM 'demo' has no balloon device (define it with --balloon)\n");
  // The kernel does not exist: start fails with the reason vmm run itself gives, and the VM is
  // still shut off.
  auto direct = vmm_test::run_shell(v + "run --kernel /k --memory 32M", dir_);
  ASSERT_NE(direct.rc, 0);
  ASSERT_TRUE(direct.err.starts_with("vmm: ")) << direct.err;
  auto st = vmm_test::run_shell(v + "start" + o + " demo", dir_);
  EXPECT_EQ(st.rc, 1);
  EXPECT_EQ(st.err, "vmm: VM 'demo' failed to start: " + direct.err.substr(5));
  EXPECT_FALSE(fs::exists(sd_.pid("demo"))) << "the stale pid file was cleaned";
  // Bad definition files.
  std::ofstream(dir_ + "/bad.json") << "{\"format\": \"vmm-domain\", \"version\": 7}";
  auto b = vmm_test::run_shell(v + "define" + o + " " + dir_ + "/bad.json", dir_);
  EXPECT_EQ(b.rc, 1);
  EXPECT_EQ(b.err, "vmm: " + dir_ + "/bad.json: unknown version 7 (this vmm reads version 1)\n");
  std::ofstream(sd_.definition("broken")) << "{not json";
  auto br = vmm_test::run_shell(v + "dominfo" + o + " broken", dir_);
  EXPECT_EQ(br.rc, 1);
  EXPECT_TRUE(br.err.starts_with("vmm: " + sd_.definition("broken") + ": not valid JSON"))
      << br.err;
  auto both = vmm_test::run_shell(v + "define" + o + " " + dir_ + "/bad.json --name x", dir_);
  EXPECT_EQ(both.rc, 2);
  EXPECT_EQ(both.err, "vmm: define takes a FILE or --name NAME with vmm run's flags\n");
  auto u = vmm_test::run_shell(v + "undefine" + o + " demo", dir_);
  EXPECT_EQ(u.rc, 0) << u.err;
  EXPECT_FALSE(fs::exists(sd_.definition("demo")));
  EXPECT_FALSE(fs::exists(sd_.run_dir("demo")));
}

// A relative --state-dir names the same directory from anywhere once a VM is defined: the paths
// stored and passed to vmm run are absolute.
TEST_F(LifecycleStateTest, ARelativeStateDirIsMadeAbsolute) {
  fs::create_directories(dir_ + "/a/b");
  auto d =
      vmm_test::run_shell("cd " + dir_ + "/a && " + VMM_BINARY +
                              " define --state-dir ./st/ --name x --kernel b/../k --memory 32M",
                          dir_);
  ASSERT_EQ(d.rc, 0) << d.err;
  auto l = vmm_test::run_shell(
      std::string(VMM_BINARY) + " list --all --state-dir " + dir_ + "/a/st", dir_);
  EXPECT_NE(l.out.find(" -    x      shut off\n"), std::string::npos) << l.out;
  std::ifstream f(dir_ + "/a/st/x.json");
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("\"kernel\": \"" + dir_ + "/a/k\""), std::string::npos) << ss.str();
}

// vmm create makes the images through libimg; qemu-img is the judge of what it made.
TEST_F(LifecycleStateTest, CreateMakesImagesQemuImgAcceptsAndDefinesTheVm) {
  std::string v = std::string(VMM_BINARY) + " ";
  std::string o = " --state-dir " + sd_.root;
  std::string base = sd_.root + "/images/c1-vda.qcow2";
  auto c = vmm_test::run_shell(
      v + "create" + o + " --name c1 --kernel /k --memory 32M " + "--disk size=1G,format=qcow2",
      dir_);
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_EQ(c.out,
            "Disk 'vda': created " + base + " (qcow2, 1073741824 bytes)\nDomain 'c1' defined\n\n");
  auto info = vmm_test::run_shell("qemu-img info --output=json " + base, dir_);
  ASSERT_EQ(info.rc, 0) << info.err;
  EXPECT_NE(info.out.find("\"virtual-size\": 1073741824"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("\"format\": \"qcow2\""), std::string::npos) << info.out;
  EXPECT_EQ(vmm_test::run_shell("qemu-img check " + base, dir_).rc, 0);

  // An overlay on c1's image: a linked disk for a second VM.
  std::string ov = dir_ + "/ov.qcow2";
  auto c2 = vmm_test::run_shell(v + "create" + o +
                                    " --name c2 --kernel /k --memory 32M --disk path=" + ov +
                                    ",backing=" + base + " --disk size=16M,format=raw",
                                dir_);
  ASSERT_EQ(c2.rc, 0) << c2.err;
  auto oi = vmm_test::run_shell("qemu-img info --output=json " + ov, dir_);
  EXPECT_NE(oi.out.find("\"backing-filename\": \"" + base + "\""), std::string::npos) << oi.out;
  EXPECT_NE(oi.out.find("\"backing-filename-format\": \"qcow2\""), std::string::npos) << oi.out;
  EXPECT_NE(oi.out.find("\"virtual-size\": 1073741824"), std::string::npos) << oi.out;
  EXPECT_EQ(vmm_test::run_shell("qemu-img check " + ov, dir_).rc, 0);
  auto raw =
      vmm_test::run_shell("qemu-img info --output=json " + sd_.root + "/images/c2-vdb.raw", dir_);
  EXPECT_NE(raw.out.find("\"virtual-size\": 16777216"), std::string::npos) << raw.out;
  auto bl = vmm_test::run_shell(v + "domblklist" + o + " c2", dir_);
  EXPECT_NE(bl.out.find(" vda      " + ov + "\n"), std::string::npos) << bl.out;

  // Refusals leave nothing behind.
  auto dup = vmm_test::run_shell(v + "create" + o + " --name c1 --kernel /k --disk size=1G", dir_);
  EXPECT_EQ(dup.rc, 1);
  EXPECT_EQ(dup.err, "vmm: VM 'c1' already exists\n");
  auto over = vmm_test::run_shell(
      v + "create" + o + " --name c3 --kernel /k --memory 32M --disk path=" + ov + ",size=1G",
      dir_);
  EXPECT_EQ(over.rc, 1);
  EXPECT_EQ(over.err,
            "vmm: --disk " + ov + " exists: give size= or backing= only for a new image\n");
  auto nob = vmm_test::run_shell(v + "create" + o +
                                     " --name c3 --kernel /k --memory 32M --disk path=" + dir_ +
                                     "/new.qcow2,backing=" + dir_ + "/nope.qcow2",
                                 dir_);
  EXPECT_EQ(nob.rc, 1);
  EXPECT_TRUE(nob.err.starts_with("vmm: creating " + dir_ + "/new.qcow2: backing image " + dir_ +
                                  "/nope.qcow2"))
      << nob.err;
  EXPECT_FALSE(fs::exists(dir_ + "/new.qcow2"));
  EXPECT_FALSE(fs::exists(sd_.definition("c3")));
}

}  // namespace
}  // namespace vmm::lifecycle
