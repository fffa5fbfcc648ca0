// Our NBD client (libimg/src/nbd_client) against real servers: qemu-nbd serving qcow2 and raw,
// nbdkit's memory, file and pattern plugins, and our own img-nbd. Each test runs img and
// qemu-img on the same URI and compares what a user sees (info, map, compare), or checks the
// bytes with qemu-img compare after img wrote them.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <vector>

#include "img/image.h"
#include "img/io_loop.h"
#include "nbd_server_util.h"

namespace {

using imgtest::img;
using imgtest::sh;
using nbdtest::NbdServer;

// nbdkit in the background on a unix socket (it forks once the socket listens).
class Nbdkit {
 public:
  Nbdkit(const imgtest::TempDir& dir, const std::string& args)
      : sock_(dir.file("kit.sock")), pidf_(dir.file("kit.pid")) {
    auto r = sh("nbdkit -U '" + sock_ + "' -P '" + pidf_ + "' " + args);
    EXPECT_EQ(r.rc, 0) << "nbdkit " << args << ": " << r.err;
    // nbdkit's parent can return before the child has written its pid file.
    for (int i = 0; i < 500 && pid_ <= 0; ++i) {
      pid_ = std::atoi(imgtest::slurp(pidf_).c_str());
      if (pid_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_GT(pid_, 0) << "nbdkit wrote no pid file";
  }
  ~Nbdkit() { kill(SIGTERM); }
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    for (int i = 0; i < 1000 && !NbdServer::gone(pid_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = 0;
  }
  std::string uri() const { return "nbd+unix:///?socket=" + sock_; }

 private:
  std::string sock_, pidf_;
  pid_t pid_ = 0;
};

#define REQUIRE_PEERS()                                                         \
  do {                                                                          \
    if (!imgtest::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed"; \
    REQUIRE_TOOL("qemu-nbd");                                                   \
    REQUIRE_TOOL("qemu-io");                                                    \
  } while (0)

// A 64 MiB qcow2 with 1 MiB of data at 1 MiB and a zero cluster run at 8 MiB.
std::string make_sample(const imgtest::TempDir& dir) {
  std::string f = dir.file("a.qcow2");
  EXPECT_EQ(sh("qemu-img create -f qcow2 '" + f + "' 64M").rc, 0);
  EXPECT_EQ(sh("qemu-io -c 'write -P 0xab 1M 1M' -c 'write -z 8M 1M' '" + f + "'").rc, 0);
  return f;
}

// img and qemu-img print the same for `CMD URI`.
void expect_same(const std::string& cmd, const std::string& uri) {
  auto ours = img(cmd + " '" + uri + "'");
  auto theirs = sh("qemu-img " + cmd + " '" + uri + "'");
  ASSERT_EQ(theirs.rc, 0) << theirs.err;
  EXPECT_EQ(ours.rc, 0) << ours.err;
  EXPECT_EQ(ours.out, theirs.out) << "img " << cmd << " " << uri;
}

uint64_t data_bytes(const std::string& map_json) {
  uint64_t n = 0;
  for (const auto& r : nbdtest::map_runs(map_json)) n += r.data ? r.length : 0;
  return n;
}

TEST(NbdClient, InfoAndMapMatchQemuImgOnQemuNbdQcow2) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  NbdServer srv(dir, "q", "qemu-nbd", "-f qcow2 -x name -t '" + make_sample(dir) + "'");
  for (const char* cmd : {"info", "info --output=json", "map", "map --output=json"}) {
    expect_same(cmd, srv.uri("name"));
  }
  // qemu's legacy name prints as its URI.
  expect_same("info", "nbd:unix:" + dir.file("q.sock") + ":exportname=name");
}

// qemu-nbd -f raw on a qcow2 file: the client sees the qcow2 bytes and probes the format over
// the network, as qemu-img does.
TEST(NbdClient, ProbesQcow2OverTheWire) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  NbdServer srv(dir, "q", "qemu-nbd", "-f raw -r -t '" + make_sample(dir) + "'");
  expect_same("info", srv.uri());
  auto r = img("compare '" + dir.file("a.qcow2") + "' '" + srv.uri() + "'");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
}

TEST(NbdClient, ConvertFromExportStaysSparse) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  NbdServer srv(dir, "q", "qemu-nbd", "-f qcow2 -r -t '" + make_sample(dir) + "'");
  std::string out = dir.file("out.qcow2");
  auto r = img("convert -O qcow2 '" + srv.uri() + "' '" + out + "'");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto cmp = sh("qemu-img compare '" + srv.uri() + "' '" + out + "'");
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  auto map = sh("qemu-img map --output=json '" + out + "'");
  ASSERT_EQ(map.rc, 0) << map.err;
  EXPECT_EQ(data_bytes(map.out), 1u << 20) << map.out;  // only the 1 MiB of data was copied
  EXPECT_EQ(sh("qemu-img check '" + out + "'").rc, 0);
}

TEST(NbdClient, ConvertIntoNbdkitMemoryThenCompare) {
  REQUIRE_PEERS();
  REQUIRE_TOOL("nbdkit");
  imgtest::TempDir dir;
  std::string src = make_sample(dir);
  Nbdkit kit(dir, "memory 64M");
  auto r = img("convert -n -O raw '" + src + "' '" + kit.uri() + "'");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto cmp = sh("qemu-img compare '" + src + "' '" + kit.uri() + "'");
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  auto ours = img("compare '" + src + "' '" + kit.uri() + "'");
  EXPECT_EQ(ours.rc, 0) << ours.out << ours.err;
  expect_same("map --output=json", kit.uri());
  // A differing byte is found across the network too.
  ASSERT_EQ(sh("qemu-io -f raw -c 'write -P 0x01 40M 512' '" + kit.uri() + "'").rc, 0);
  auto diff = img("compare '" + src + "' '" + kit.uri() + "'");
  EXPECT_EQ(diff.rc, 1) << diff.out << diff.err;
  EXPECT_EQ(diff.out, sh("qemu-img compare '" + src + "' '" + kit.uri() + "'").out);
}

TEST(NbdClient, NbdkitFilePluginInfoMapDd) {
  REQUIRE_PEERS();
  REQUIRE_TOOL("nbdkit");
  imgtest::TempDir dir;
  std::string raw = dir.file("a.raw");
  ASSERT_EQ(sh("qemu-img convert -O raw '" + make_sample(dir) + "' '" + raw + "'").rc, 0);
  Nbdkit kit(dir, "file '" + raw + "'");
  for (const char* cmd : {"info", "map --output=json"}) expect_same(cmd, kit.uri());
  std::string out = dir.file("dd.raw");
  auto r = img("dd if='" + kit.uri() + "' of='" + out + "' bs=1M count=4");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(sh("cmp -n 4194304 '" + raw + "' '" + out + "'").rc, 0);
}

TEST(NbdClient, AgainstImgNbd) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  std::string src = make_sample(dir);
  NbdServer srv(dir, "ours", nbdtest::kImgNbd, "-f qcow2 -x e -t '" + src + "'");
  for (const char* cmd : {"info", "map --output=json"}) expect_same(cmd, srv.uri("e"));
  std::string out = dir.file("out.qcow2");
  ASSERT_EQ(img("convert -O qcow2 '" + srv.uri("e") + "' '" + out + "'").rc, 0);
  // img-nbd serves src read-write and holds QEMU's write lock on it, as qemu-nbd would: reading
  // the file beside it takes -U.
  EXPECT_EQ(sh("qemu-img compare -U '" + src + "' '" + out + "'").rc, 0);
  EXPECT_EQ(sh("qemu-img compare '" + src + "' '" + out + "'").rc, 2) << "img-nbd took no lock";
  // And back: a write through our client into our server lands in the qcow2 file.
  std::string other = dir.file("b.qcow2");
  ASSERT_EQ(sh("qemu-img create -f qcow2 '" + other + "' 64M").rc, 0);
  ASSERT_EQ(sh("qemu-io -c 'write -P 0x5a 0 3M' '" + other + "'").rc, 0);
  auto r = img("convert -n -O raw '" + other + "' '" + srv.uri("e") + "'");
  ASSERT_EQ(r.rc, 0) << r.err;
  srv.stop();
  auto cmp = sh("qemu-img compare '" + other + "' '" + src + "'");
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  EXPECT_EQ(sh("qemu-img check '" + src + "'").rc, 0);
}

TEST(NbdClient, ReadOnlyExportRefusesWrites) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  std::string src = make_sample(dir);
  NbdServer srv(dir, "q", "qemu-nbd", "-f qcow2 -r -t '" + src + "'");
  auto r = img("convert -n -O raw '" + src + "' '" + srv.uri() + "'");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("read-only"), std::string::npos) << r.err;
}

TEST(NbdClient, NoServerIsAClearError) {
  imgtest::TempDir dir;
  auto r = img("info 'nbd+unix:///?socket=" + dir.file("nobody.sock") + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("Could not open 'nbd+unix:///?socket="), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  auto bad = img("info nbd:unix:");
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find("no socket path"), std::string::npos) << bad.err;
}

// A server that is not there, or a name that does not resolve: qemu-img's message word for
// word ("Failed to connect to 'ADDRESS': ...", "address resolution failed for HOST:PORT: ...").
TEST(NbdClient, ConnectFailuresSayWhatQemuImgSays) {
  REQUIRE_PEERS();
  imgtest::TempDir dir;
  int port = nbdtest::free_tcp_port();
  ASSERT_GT(port, 0);
  const std::string p = std::to_string(port);
  for (const std::string& uri :
       {"nbd+unix:///?socket=" + dir.file("nobody.sock"), "nbd:unix:" + dir.file("nobody.sock"),
        "nbd://127.0.0.1:" + p + "/x", "nbd://[::1]:" + p + "/x", "nbd:127.0.0.1:" + p,
        std::string("nbd://no-such-host.invalid/x")}) {
    auto ours = img("info '" + uri + "'");
    auto theirs = sh("qemu-img info '" + uri + "'");
    EXPECT_EQ(ours.rc, 1) << uri;
    EXPECT_EQ(ours.err, "img" + theirs.err.substr(std::string("qemu-img").size())) << uri;
  }
  // An export the server does not have: qemu-img's first line, then what libnbd can tell.
  NbdServer srv(dir, "q", "qemu-nbd", "-f qcow2 -x there -r -t '" + make_sample(dir) + "'");
  auto r = img("info '" + srv.uri("elsewhere") + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("': Requested export not available"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("elsewhere"), std::string::npos) << r.err;
}

// The server dies while img reads from it (every read is slowed to 200 ms by nbdkit's delay
// filter, so copying 1 GiB takes several seconds even with many reads in flight): img fails
// with an I/O error within seconds.
TEST(NbdClient, LostServerMidReadIsAnIoError) {
  REQUIRE_TOOL("nbdkit");
  imgtest::TempDir dir;
  Nbdkit kit(dir, "--filter=delay pattern size=1G rdelay=200ms");
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    kit.kill(SIGKILL);
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = img("convert -O raw '" + kit.uri() + "' '" + dir.file("out.raw") + "'");
  killer.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_NE(r.err.find("error while reading"), std::string::npos) << r.err;
  // libnbd's words depend on where the kill lands: mid-request "not connected", between two
  // requests "invalid state: DEAD" (seen in CI). Either names the lost connection.
  EXPECT_TRUE(r.err.find("not connected") != std::string::npos ||
              r.err.find("DEAD") != std::string::npos)
      << r.err;
  EXPECT_LT(secs, 10.0);
}

}  // namespace

namespace {

// TCP, on IPv4 and IPv6 loopback, against qemu-nbd and img-nbd: what img prints matches
// qemu-img on the same URI, a convert from the export is the image, and a convert -n into it
// lands in the file.
TEST(NbdClient, OverTcpLoopbackAgainstQemuNbdAndImgNbd) {
  REQUIRE_PEERS();
  for (const char* addr : {"127.0.0.1", "::1"}) {
    for (const std::string& server : {std::string("qemu-nbd"), nbdtest::kImgNbd}) {
      SCOPED_TRACE(server + " on " + addr);
      imgtest::TempDir dir;
      std::string src = make_sample(dir);
      NbdServer srv(dir, "s", server, "-f qcow2 -x e -t '" + src + "'", nbdtest::Listen::tcp(addr));
      for (const char* cmd : {"info", "map --output=json"}) expect_same(cmd, srv.uri("e"));
      std::string out = dir.file("out.qcow2");
      auto r = img("convert -O qcow2 '" + srv.uri("e") + "' '" + out + "'");
      ASSERT_EQ(r.rc, 0) << r.err;
      EXPECT_EQ(sh("qemu-img compare -U '" + src + "' '" + out + "'").rc, 0);
      std::string other = dir.file("b.qcow2");
      ASSERT_EQ(sh("qemu-img create -q -f qcow2 '" + other + "' 64M").rc, 0);
      ASSERT_EQ(sh("qemu-io -c 'write -P 0x5a 1M 3M' '" + other + "'").rc, 0);
      r = img("convert -n -O raw '" + other + "' '" + srv.uri("e") + "'");
      ASSERT_EQ(r.rc, 0) << r.err;
      ASSERT_TRUE(srv.stop());
      auto cmp = sh("qemu-img compare '" + other + "' '" + src + "'");
      EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
      EXPECT_EQ(sh("qemu-img check '" + src + "'").rc, 0);
    }
  }
}

}  // namespace

namespace {

// A discard through libimg on a raw export (what a guest's discard becomes) goes out as
// NBD_CMD_TRIM, a zero write as NBD_CMD_WRITE_ZEROES without NO_HOLE when it may unmap and with
// it when not: nbdkit's log filter records what the server got, as it does for qemu-io.
TEST(NbdClient, DiscardIsTrimAndZeroWritesAreWriteZeroes) {
  REQUIRE_TOOL("nbdkit");
  imgtest::TempDir dir;
  const std::string log = dir.file("kit.log");
  Nbdkit kit(dir, "--filter=log memory 8M logfile='" + log + "'");
  auto loop = img::IoLoop::create();
  ASSERT_TRUE(loop.has_value()) << loop.error().to_string();
  {
    auto d = (*loop)->run(img::open_image(**loop, kit.uri(), {.format = "raw"}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    std::vector<uint8_t> data(1 << 20, 0x5a);
    ASSERT_TRUE((*loop)->run((*d)->write(1 << 20, data.data(), data.size())).has_value());
    auto st = (*loop)->run((*d)->discard(1 << 20, 1 << 20));
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    st = (*loop)->run((*d)->write_zeroes(4 << 20, 64 << 10, {.may_unmap = true}));
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    st = (*loop)->run((*d)->write_zeroes(5 << 20, 64 << 10, {.may_unmap = false}));
    ASSERT_TRUE(st.has_value()) << st.error().to_string();
    ASSERT_TRUE((*loop)->run((*d)->close()).has_value());
  }
  kit.kill(SIGTERM);
  const std::string got = imgtest::slurp(log);
  EXPECT_NE(got.find("Trim id=2 offset=0x100000 count=0x100000"), std::string::npos) << got;
  EXPECT_NE(got.find("Zero id=3 offset=0x400000 count=0x10000 trim=1"), std::string::npos) << got;
  EXPECT_NE(got.find("Zero id=4 offset=0x500000 count=0x10000 trim=0"), std::string::npos) << got;
}

// The extents base:allocation names (data; data that reads as zeros, which qemu-img maps as
// data and zero; a hole that reads as zeros), from nbdkit's extentlist filter: img map prints
// what qemu-img map prints, and convert copies the data and skips both zero kinds. (A hole that
// need not read as zeros, HOLE without ZERO, img reads as data where qemu-img maps it
// unallocated: docs/img-nbd.md.)
TEST(NbdClient, EveryExtentKindMapsAsQemuImgMapsIt) {
  REQUIRE_PEERS();
  REQUIRE_TOOL("nbdkit");
  imgtest::TempDir dir;
  std::ofstream(dir.file("extents")) << "0 1M\n1M 1M zero\n2M 1M hole,zero\n";
  Nbdkit kit(dir, "--filter=extentlist memory 8M extentlist='" + dir.file("extents") + "'");
  ASSERT_EQ(sh("qemu-io -f raw -c 'write -P 0x5a 0 1M' '" + kit.uri() + "'").rc, 0);
  expect_same("map --output=json -f raw", kit.uri());
  expect_same("map -f raw", kit.uri());
  std::string out = dir.file("out.qcow2");
  auto r = img("convert -f raw -O qcow2 '" + kit.uri() + "' '" + out + "'");
  ASSERT_EQ(r.rc, 0) << r.err;
  auto map = sh("qemu-img map --output=json '" + out + "'");
  EXPECT_EQ(data_bytes(map.out), 1u << 20) << map.out;  // only the data extent was written
  EXPECT_EQ(sh("qemu-img compare -f raw '" + kit.uri() + "' '" + out + "'").rc, 0);
}

}  // namespace
