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

#include <cctype>
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
#include "storage_net.h"

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
  RunResult vmm(const std::string& args) { return vmm_in("", args); }
  // vmm behind a prefix (StorageNet::in_vm(): in another network namespace).
  RunResult vmm_in(const std::string& prefix, const std::string& args) {
    return run_shell(prefix + "timeout 300 " + VMM_BINARY + " " + args, dir_);
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
void expect_guest_writes(const std::string& img, const std::string& raw,
                         const std::string& guest_out);

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
  expect_guest_writes(img, dir_ + "/disk.raw", r.out);
}

// What the test guest's virtio-blk plan leaves on a 64 MiB image whose first MiB was 0x5a
// before: its patterns where it wrote, the old bytes elsewhere (and the zeros it wrote, where it
// says it did). raw: a scratch file name; guest_out: the guest's serial output.
void expect_guest_writes(const std::string& img, const std::string& raw,
                         const std::string& guest_out) {
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
  if (guest_out.find("write-zeroes ok") != std::string::npos) {
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

namespace {

// The storage host, end to end: img makes a qcow2 on a "storage" network namespace and img-nbd
// serves it over TCP; from a second namespace ("vm", joined to the first by a veth pair) qemu-io
// writes the image's first MiB through the export and vmm runs the guest on
// --disk nbd://10.77.0.1/..., whose virtio-blk plan reads and writes it over the network. After
// img-nbd has stopped, both checkers find the image clean on the storage side and it holds
// what the guest wrote.
TEST_F(VmmE2eTest, GuestInOneNamespaceDrivesADiskServedFromAnother) {
  if (std::system("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
    GTEST_SKIP() << "qemu-img/qemu-io not installed";
  }
  vmm_test::StorageNet net;
  if (std::string why = net.start(); !why.empty()) GTEST_SKIP() << why;
  std::string img = dir_ + "/disk.qcow2", pidf = dir_ + "/nbd.pid";
  auto c = run_shell(std::string(IMG_BINARY) + " create -q -f qcow2 " + img + " 64M", dir_);
  ASSERT_EQ(c.rc, 0) << c.err;
  c = run_shell(net.in_storage() + IMG_NBD_BINARY + " --fork --pid-file " + pidf + " -t -b " +
                    vmm_test::StorageNet::kStorageAddr + " -p 10809 -x disk -f qcow2 " + img,
                dir_);
  ASSERT_EQ(c.rc, 0) << c.err;
  const std::string uri = std::string("nbd://") + vmm_test::StorageNet::kStorageAddr + "/disk";
  c = run_shell(net.in_vm() + "qemu-io -f raw -c 'write -P 0x5a 0 1M' " + uri, dir_);
  EXPECT_EQ(c.rc, 0) << c.out << c.err;
  auto r = vmm_in(net.in_vm(),
                  std::string("run --kernel ") + VMM_TEST_GUEST + " --memory 64M --disk " + uri);
  // SIGTERM: img-nbd finishes what is in flight, flushes and exits.
  std::system(("p=$(cat " + pidf + "); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.05; done")
                  .c_str());
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("GUEST: PASS"), std::string::npos) << r.out;
  c = run_shell(std::string(IMG_BINARY) + " check " + img, dir_);
  EXPECT_EQ(c.rc, 0) << "img check: " << c.out << c.err;
  c = run_shell("qemu-img check " + img, dir_);
  EXPECT_EQ(c.rc, 0) << "qemu-img check: " << c.out << c.err;
  expect_guest_writes(img, dir_ + "/disk.raw", r.out);
}

}  // namespace

namespace {

// The NBD server dies under a running guest: the guest's next reads fail with VIRTIO_BLK_S_IOERR
// (status 1) within seconds, not a hang, and vmm goes on running (the guest then powers off).
TEST_F(VmmE2eTest, AServerThatDiesFailsTheGuestsRequestsWithIoerr) {
  if (std::system("command -v qemu-io >/dev/null") != 0) GTEST_SKIP() << "qemu-io not installed";
  std::string img = dir_ + "/disk.qcow2", sock = dir_ + "/nbd.sock", pidf = dir_ + "/nbd.pid";
  auto c = run_shell(std::string(IMG_BINARY) + " create -q -f qcow2 " + img +
                         " 64M && qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' " + img,
                     dir_);
  ASSERT_EQ(c.rc, 0) << c.err;
  c = run_shell(std::string(IMG_NBD_BINARY) + " --fork --pid-file " + pidf + " -t -k " + sock +
                    " -f qcow2 " + img,
                dir_);
  ASSERT_EQ(c.rc, 0) << c.err;
  const std::string log = dir_ + "/guest.txt";
  std::thread guest([&] {
    std::system((std::string("timeout 120 ") + VMM_BINARY + " run --kernel " + VMM_TEST_GUEST +
                 " --memory 64M --cmdline readerror --disk 'nbd+unix:///?socket=" + sock + "' >" +
                 log + " 2>" + dir_ + "/guest.err </dev/null; echo $? >" + dir_ + "/guest.rc")
                    .c_str());
  });
  bool reading = false;
  for (int i = 0; i < 600 && !reading; ++i) {
    const std::string so_far = slurp(log);
    reading = so_far.find("GUEST: blk reading until a request fails") != std::string::npos;
    if (so_far.find("GUEST: FAIL") != std::string::npos) break;
    if (!reading) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto killed = std::chrono::steady_clock::now();
  std::system(("kill -9 $(cat " + pidf + ")").c_str());
  guest.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  ASSERT_TRUE(reading) << slurp(log) << slurp(dir_ + "/guest.err");
  const std::string out = slurp(log);
  EXPECT_NE(out.find("GUEST: blk read failed after "), std::string::npos) << out;
  const size_t st = out.find("request failed (status != OK), status 1");
  ASSERT_NE(st, std::string::npos) << out;
  EXPECT_FALSE(std::isdigit(static_cast<unsigned char>(out[st + 39]))) << out;  // 1, not 10..
  EXPECT_EQ(slurp(dir_ + "/guest.rc"), "0\n") << slurp(dir_ + "/guest.err");
  EXPECT_LT(secs, 60.0) << "the guest waited on a dead server";
}

}  // namespace
