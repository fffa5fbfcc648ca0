// End to end under KVM: the vmm binary boots the freestanding test guest (vmm/guest) and, with a
// qcow2 disk prepared by qemu-img/qemu-io, the guest's virtio-blk checks must print
// "GUEST: PASS" and reset (exit 0); qemu-img then checks the image and the guest's writes.
// Skipped, with the reason, only when /dev/kvm is missing or not accessible.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "console_peer.h"
#include "img/bytes.h"
#include "run_shell.h"

namespace {

namespace fs = std::filesystem;

std::string tmpdir() {
  const char* d = std::getenv("IMG_TEST_TMPDIR");
  std::string p = (d && *d) ? d : "/tmp";
  p += "/vmm_e2e_" + std::to_string(getpid());
  fs::create_directories(p);
  return p;
}

using vmm_test::ConsolePeer;
using vmm_test::run_shell;
using vmm_test::RunResult;
using vmm_test::slurp;

class VmmE2eTest : public ::testing::Test {
 public:  // used by run_guest_on_qcow2 below
  void SetUp() override {
    if (access("/dev/kvm", F_OK) != 0) GTEST_SKIP() << "/dev/kvm is missing";
    if (access("/dev/kvm", R_OK | W_OK) != 0)
      GTEST_SKIP() << "/dev/kvm is not read/write for this user";
    dir_ = tmpdir();
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }
  RunResult vmm(const std::string& args) {
    return run_shell(std::string("timeout 300 ") + VMM_BINARY + " " + args, dir_);
  }
  std::string dir_;
};

TEST_F(VmmE2eTest, GuestBootsAndResetsWithoutDisk) {
  auto r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --cmdline nodisk");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  EXPECT_LT(r.seconds, 60);
}

TEST_F(VmmE2eTest, GuestReadsRngAndTalksOverTheConsoleSocket) {
  std::string sock = dir_ + "/con.sock";
  ConsolePeer peer;
  ASSERT_TRUE(peer.listen_on(sock)) << strerror(errno);
  peer.serve("hello host\n", "ping-from-host\n");
  auto r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST +
               " --memory 64M --cmdline 'nodisk rng console' --rng --console socket=" + sock);
  peer.finish();
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("GUEST: rng ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GUEST: console 80x24"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GUEST: console got 'ping-from-host'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  EXPECT_EQ(peer.got, "GUEST-CONSOLE: hello host\nGUEST-CONSOLE: got ping-from-host\n");
}

TEST_F(VmmE2eTest, GuestFailsWhenTheDevicesItWasToldAboutAreMissing) {
  auto r =
      vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --cmdline 'nodisk rng'");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("GUEST: FAIL no virtio-rng device"), std::string::npos) << r.out;
  r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --rng rate=0");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--rng rate must be above 0"), std::string::npos) << r.err;
  r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --console tcp:1");
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--console must be stdio, file=PATH or socket=PATH"), std::string::npos)
      << r.err;
}

TEST_F(VmmE2eTest, SerialToFileAndTwoCpus) {
  auto r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST +
               " --cpus 2 --cmdline nodisk --serial file:" + dir_ + "/serial.txt");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(slurp(dir_ + "/serial.txt").find("GUEST: PASS"), std::string::npos);
}

TEST_F(VmmE2eTest, ClearErrorsAndExitCodes) {
  auto r = vmm("run --kernel /nonexistent/kernel");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("cannot open kernel /nonexistent/kernel"), std::string::npos) << r.err;
  r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 12Q");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("bad size"), std::string::npos) << r.err;
  r = vmm("run");
  EXPECT_EQ(r.rc, 2);
  std::ofstream(dir_ + "/junk") << std::string(4096, 'j');
  r = vmm("run --kernel " + dir_ + "/junk");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("not a bzImage: setup header magic missing"), std::string::npos) << r.err;
}

// A one-instruction ELF guest: ud2 with an empty IDT is a triple fault.
TEST_F(VmmE2eTest, TripleFaultExitsWithCode3) {
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
  f[0x800] = 0x0f;
  f[0x801] = 0x0b;
  std::ofstream(dir_ + "/ud2.elf", std::ios::binary)
      .write(reinterpret_cast<char*>(f.data()), f.size());
  auto r = vmm("run --kernel " + dir_ + "/ud2.elf --memory 32M");
  EXPECT_EQ(r.rc, 3) << r.err;
  EXPECT_NE(r.err.find("triple fault"), std::string::npos) << r.err;
}

// The guest's virtio-blk checks on a qcow2 image; disk_opts are appended to --disk.
void run_guest_on_qcow2(VmmE2eTest& t, const std::string& disk_opts);

TEST_F(VmmE2eTest, GuestDrivesVirtioBlkOnQcow2) { run_guest_on_qcow2(*this, ",format=qcow2"); }

// cache=none: the image is open with O_DIRECT and guest buffers (anywhere in guest memory) are
// bounced where they are not aligned.
TEST_F(VmmE2eTest, GuestDrivesVirtioBlkOnQcow2WithCacheNone) {
  run_guest_on_qcow2(*this, ",format=qcow2,cache=none");
}

void run_guest_on_qcow2(VmmE2eTest& t, const std::string& disk_opts) {
  auto& dir_ = t.dir_;
  auto vmm = [&](const std::string& args) { return t.vmm(args); };
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }
  std::string img = dir_ + "/disk.qcow2";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f qcow2 " + img + " 64M").c_str()));
  ASSERT_EQ(
      0, std::system(("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' " + img + " >/dev/null").c_str()));
  auto r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --disk " + img +
               disk_opts);
  if (r.err.find("no virtio-blk device yet") != std::string::npos) {
    GTEST_SKIP() << "this build has no virtio-blk device yet";
  }
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  ASSERT_EQ(0, std::system(("qemu-img check -q " + img).c_str()))
      << "qemu-img check found problems";
  std::string raw = dir_ + "/disk.raw";
  ASSERT_EQ(0, std::system(("qemu-img convert -O raw " + img + " " + raw).c_str()));
  std::string d = slurp(raw);
  ASSERT_EQ(d.size(), 64u << 20);
  auto pattern_at = [&](uint64_t off, uint64_t len) {
    for (uint64_t o = off; o < off + len; o += 8) {
      if (img::load_le64(&d[o]) != (0xa5a5000000000000ull | o)) return false;
    }
    return true;
  };
  auto bytes_at = [&](uint64_t off, uint64_t len, char b) {
    return d.compare(off, len, std::string(len, b)) == 0;
  };
  EXPECT_TRUE(bytes_at(0, 60 * 1024, 0x5a));
  EXPECT_TRUE(pattern_at(60 * 1024, 96 * 1024));
  EXPECT_TRUE(bytes_at(156 * 1024, (1 << 20) - 512 - 156 * 1024, 0x5a));
  EXPECT_TRUE(pattern_at((1 << 20) - 512, 1536));
  EXPECT_TRUE(bytes_at((1 << 20) + 1024, (1 << 20) - 512, 0));
  EXPECT_TRUE(pattern_at((2 << 20) + 512, 4096));
  if (r.out.find("write-zeroes ok") != std::string::npos) {
    EXPECT_TRUE(pattern_at(3 << 20, 8192));
    EXPECT_TRUE(bytes_at((3 << 20) + 8192, 32768, 0));
    EXPECT_TRUE(pattern_at((3 << 20) + 40960, 72 * 1024 - 40960));
  }
}

}  // namespace

namespace {

// vmm --disk nbd+unix://: the guest's virtio-blk checks on a qcow2 image that qemu-nbd serves
// (libimg's NBD client under the device); the image checks clean afterwards.
TEST_F(VmmE2eTest, GuestDrivesVirtioBlkOverNbd) {
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-nbd >/dev/null && "
                  "command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-nbd/qemu-io not installed";
  }
  std::string img = dir_ + "/disk.qcow2", sock = dir_ + "/nbd.sock", pidf = dir_ + "/nbd.pid";
  ASSERT_EQ(0, std::system(("qemu-img create -q -f qcow2 " + img + " 64M").c_str()));
  ASSERT_EQ(
      0, std::system(("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' " + img + " >/dev/null").c_str()));
  ASSERT_EQ(0, std::system(
                   ("qemu-nbd --fork --pid-file " + pidf + " -k " + sock + " -f qcow2 -x d " + img)
                       .c_str()));
  auto r = vmm(std::string("run --kernel ") + VMM_TEST_GUEST +
               " --memory 64M --disk 'nbd+unix:///d?socket=" + sock + "'");
  std::system(("kill $(cat " + pidf + "); sleep 0.3").c_str());
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  EXPECT_EQ(0, std::system(("qemu-img check -q " + img).c_str()))
      << "qemu-img check found problems";
  EXPECT_EQ(
      0, std::system(
             ("qemu-io -f qcow2 -c 'read -P 0x5a 0 60k' " + img + " | grep -q '^read'").c_str()));
}

}  // namespace
