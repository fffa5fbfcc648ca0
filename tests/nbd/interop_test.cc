// img-nbd against the real clients: qemu-img (info, map, compare, convert), qemu-io (reads,
// writes, discards, zero writes), nbdinfo and nbdcopy from libnbd. The reference is always the
// real peer: the image file as qemu-img reads it, or the same client run against qemu-nbd.
#include <gtest/gtest.h>
#include <libnbd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "nbd_server_util.h"

namespace {

using imgtest::sh;
using nbdtest::kImgNbd;
using nbdtest::NbdServer;

// A two-image chain: base with data at [0, 1M), the overlay with data at [2M, 3M) and a zero
// cluster at 4M; the rest unallocated.
void make_chain(const imgtest::TempDir& d) {
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 base.qcow2 8M && "
               "qemu-io -f qcow2 -c 'write -P 1 0 1M' base.qcow2 && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M && "
               "qemu-io -f qcow2 -c 'write -P 2 2M 1M' -c 'write -z 4M 64k' top.qcow2",
               d.path())
                .rc,
            0);
}

TEST(NbdInterop, QemuImgReadsAChainThroughImgNbd) {
  REQUIRE_QEMU_IMG();
  imgtest::TempDir d;
  make_chain(d);
  NbdServer s(d, "s", kImgNbd, "-t -r -f qcow2 '" + d.file("top.qcow2") + "'");
  auto info = sh("qemu-img info --output=json '" + s.uri() + "'");
  ASSERT_EQ(info.rc, 0) << info.err;
  EXPECT_EQ(imgtest::flat_json(info.out)["virtual-size"], "8388608");
  auto cmp = sh("qemu-img compare -f raw -F qcow2 '" + s.uri() + "' '" + d.file("top.qcow2") + "'");
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  // Block status through the chain: the same data/zero runs as qemu-img map of the file.
  auto nmap = sh("qemu-img map --output=json -f raw '" + s.uri() + "'");
  auto fmap = sh("qemu-img map --output=json '" + d.file("top.qcow2") + "'");
  ASSERT_EQ(nmap.rc, 0) << nmap.err;
  EXPECT_EQ(nbdtest::map_runs(nmap.out), nbdtest::map_runs(fmap.out));
  // A sparse copy: convert reads the holes as holes, so the copy maps like the source.
  auto cv = sh("qemu-img convert -f raw -O qcow2 '" + s.uri() + "' copy.qcow2", d.path());
  ASSERT_EQ(cv.rc, 0) << cv.err;
  EXPECT_EQ(sh("qemu-img compare copy.qcow2 top.qcow2", d.path()).rc, 0);
  auto cmap = sh("qemu-img map --output=json copy.qcow2", d.path());
  std::vector<nbdtest::Run> data_runs;
  for (auto r : nbdtest::map_runs(cmap.out)) {
    if (r.data) data_runs.push_back(r);
  }
  EXPECT_EQ(data_runs, (std::vector<nbdtest::Run>{{0, 1 << 20, true, false},
                                                  {2 << 20, 1 << 20, true, false}}));
}

// nbdinfo --map (base:allocation) and the allocation depth match what qemu-nbd says for the
// same chain.
TEST(NbdInterop, NbdinfoMapsMatchQemuNbd) {
  REQUIRE_TOOL("nbdinfo");
  REQUIRE_TOOL("qemu-nbd");
  imgtest::TempDir d;
  make_chain(d);
  NbdServer ours(d, "ours", kImgNbd, "-t -r -A '" + d.file("top.qcow2") + "'");
  NbdServer ref(d, "ref", "qemu-nbd", "-t -r -A '" + d.file("top.qcow2") + "'");
  for (const char* ctx : {"base:allocation", "qemu:allocation-depth"}) {
    auto a = sh(std::string("nbdinfo --map=") + ctx + " '" + ours.uri() + "'");
    auto b = sh(std::string("nbdinfo --map=") + ctx + " '" + ref.uri() + "'");
    ASSERT_EQ(a.rc, 0) << a.err;
    ASSERT_EQ(b.rc, 0) << b.err;
    EXPECT_EQ(a.out, b.out) << ctx;
  }
  auto info = sh("nbdinfo --json '" + ours.uri() + "'");
  auto m = imgtest::flat_json(info.out);
  EXPECT_EQ(m["exports.0.is_read_only"], "true");
  EXPECT_EQ(m["exports.0.can_multi_conn"], "true");  // read-only: always safe
  EXPECT_EQ(m["exports.0.block_size_maximum"], "33554432");
}

// The same qemu-io writes, zero writes and discards through img-nbd and through qemu-nbd, on
// two copies of one image: afterwards both read the same, and ours checks clean.
TEST(NbdInterop, QemuIoWritesLandAsThroughQemuNbd) {
  REQUIRE_QEMU_IO();
  REQUIRE_TOOL("qemu-nbd");
  imgtest::TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 16M && "
               "qemu-io -f qcow2 -c 'write -P 9 0 16M' a.qcow2 && cp a.qcow2 b.qcow2",
               d.path())
                .rc,
            0);
  const std::string script =
      "-c 'write -P 3 0 64k' -c 'write -P 4 100000 5000' -c 'write -z 1M 1M' "
      "-c 'write -z -u 3M 256k' -c 'discard 4M 1M' -c 'write -P 5 -f 6M 8k' "
      "-c 'aio_write -P 6 8M 64k' -c 'aio_write -P 7 9M 64k' -c aio_flush -c flush "
      "-c 'read -P 4 100000 5000' -c 'read -P 0 1M 1M' -c 'read -P 5 6M 8k'";
  {
    NbdServer ours(d, "ours", kImgNbd, "-t --discard=unmap '" + d.file("a.qcow2") + "'");
    NbdServer ref(d, "ref", "qemu-nbd", "-t --discard=unmap '" + d.file("b.qcow2") + "'");
    auto a = sh("qemu-io -f raw " + script + " '" + ours.uri() + "'");
    auto b = sh("qemu-io -f raw " + script + " '" + ref.uri() + "'");
    EXPECT_EQ(a.rc, 0) << a.err;
    EXPECT_EQ(a.out.find("Pattern verification failed"), std::string::npos) << a.out;
    EXPECT_EQ(b.rc, 0) << b.err;
    EXPECT_TRUE(ours.stop());
  }
  auto cmp = sh("qemu-img compare a.qcow2 b.qcow2", d.path());
  EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
  auto chk = sh("qemu-img check a.qcow2", d.path());
  EXPECT_EQ(chk.rc, 0) << chk.out << chk.err;
  // The discarded and unmapped ranges were freed, as qemu-nbd freed them.
  auto am = nbdtest::map_runs(sh("qemu-img map --output=json a.qcow2", d.path()).out);
  auto bm = nbdtest::map_runs(sh("qemu-img map --output=json b.qcow2", d.path()).out);
  EXPECT_EQ(am, bm);
}

// nbdcopy out of img-nbd (multi-conn with -e 4) and back into it: data as the file has it.
TEST(NbdInterop, NbdcopyBothWays) {
  REQUIRE_TOOL("nbdcopy");
  REQUIRE_QEMU_IMG();
  imgtest::TempDir d;
  make_chain(d);
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 dst.qcow2 8M", d.path()).rc, 0);
  {
    NbdServer src(d, "src", kImgNbd, "-t -e 4 -r '" + d.file("top.qcow2") + "'");
    NbdServer dst(d, "dst", kImgNbd, "-t -e 4 '" + d.file("dst.qcow2") + "'");
    auto r = sh("nbdcopy '" + src.uri() + "' out.raw && nbdcopy '" + src.uri() + "' '" +
                    dst.uri() + "'",
                d.path());
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_TRUE(dst.stop());
  }
  EXPECT_EQ(sh("qemu-img compare -f raw -F qcow2 out.raw top.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img compare dst.qcow2 top.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("qemu-img check dst.qcow2", d.path()).rc, 0);
}

TEST(NbdInterop, ReadOnlyAndSnapshotLeaveTheFileAlone) {
  REQUIRE_QEMU_IO();
  imgtest::TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 4M && "
               "qemu-io -f qcow2 -c 'write -P 1 0 4M' a.qcow2 && cp a.qcow2 orig.qcow2",
               d.path())
                .rc,
            0);
  {
    NbdServer ro(d, "ro", kImgNbd, "-t -r '" + d.file("a.qcow2") + "'");
    auto w = sh("qemu-io -f raw -c 'write -P 2 0 4k' '" + ro.uri() + "'");
    // qemu-io opens read-write and is refused, as by qemu-nbd -r.
    EXPECT_NE((w.out + w.err).find("Permission denied"), std::string::npos) << w.out << w.err;
  }
  {
    // -s: the writes go to a temporary overlay and are read back from it.
    NbdServer snap(d, "snap", kImgNbd, "-t -s '" + d.file("a.qcow2") + "'");
    auto w = sh("qemu-io -f raw -c 'write -P 2 0 64k' -c 'read -P 2 0 64k' -c 'read -P 1 64k 4k' '" +
                snap.uri() + "'");
    EXPECT_EQ(w.rc, 0) << w.err;
    EXPECT_EQ(w.out.find("verification failed"), std::string::npos) << w.out;
  }
  EXPECT_EQ(sh("qemu-img compare a.qcow2 orig.qcow2", d.path()).rc, 0);
  EXPECT_EQ(sh("ls img-nbd-snapshot-* 2>/dev/null | wc -l", d.path()).out, "0\n");
}

// kill -9 in the middle of a write load: the image keeps every write that was flushed before,
// and qemu-img check finds leaked clusters at worst (exit code 3), never corruption.
TEST(NbdInterop, KillDuringWritesKeepsFlushedData) {
  REQUIRE_QEMU_IO();
  imgtest::TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 a.qcow2 64M", d.path()).rc, 0);
  NbdServer s(d, "s", kImgNbd, "-t -e 2 '" + d.file("a.qcow2") + "'");
  ASSERT_EQ(sh("qemu-io -f raw -c 'write -P 7 0 4M' -c flush '" + s.uri() + "'").rc, 0);
  std::string load;
  for (int i = 0; i < 200; ++i) load += " -c 'aio_write -P 8 " + std::to_string(8 + i % 48) + "M 256k'";
  sh("(qemu-io -f raw" + load + " -c aio_flush '" + s.uri() + "' >/dev/null 2>&1 &) ; sleep 0.3");
  EXPECT_TRUE(s.stop(SIGKILL));
  auto chk = sh("qemu-img check a.qcow2", d.path());
  EXPECT_TRUE(chk.rc == 0 || chk.rc == 3) << chk.rc << chk.out << chk.err;
  auto rd = sh("qemu-io -f qcow2 -r -c 'read -P 7 0 4M' a.qcow2", d.path());
  EXPECT_EQ(rd.rc, 0) << rd.err;
  EXPECT_EQ(rd.out.find("verification failed"), std::string::npos) << rd.out;
}

TEST(NbdInterop, BadFlagsAndFilesSayWhy) {
  imgtest::TempDir d;
  auto r = sh("'" + kImgNbd + "' --discard=foo x.qcow2");
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "img-nbd: Invalid discard mode `foo'\n");
  r = sh("'" + kImgNbd + "' -k '" + d.file("s") + "' '" + d.file("missing.qcow2") + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r.err;
  r = sh("'" + kImgNbd + "' --detect-zeroes=unmap x.qcow2");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("without setting discard operation to unmap"), std::string::npos);
}

}  // namespace

namespace {

// The real clients over TCP loopback (IPv4 and IPv6): qemu-img reads the chain as the file,
// qemu-io's writes land in it, nbdinfo lists the export.
TEST(NbdInterop, RealClientsOverTcpLoopback) {
  REQUIRE_QEMU_IMG();
  REQUIRE_TOOL("nbdinfo");
  for (const char* addr : {"127.0.0.1", "::1"}) {
    SCOPED_TRACE(addr);
    imgtest::TempDir d;
    make_chain(d);
    NbdServer s(d, "s", kImgNbd, "-t -x top -f qcow2 '" + d.file("top.qcow2") + "'",
                nbdtest::Listen::tcp(addr));
    auto cmp = sh("qemu-img compare -U -f raw -F qcow2 '" + s.uri("top") + "' '" +
                  d.file("top.qcow2") + "'");
    EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
    auto nmap = sh("qemu-img map --output=json -f raw '" + s.uri("top") + "'");
    auto fmap = sh("qemu-img map -U --output=json '" + d.file("top.qcow2") + "'");
    ASSERT_EQ(nmap.rc, 0) << nmap.err;
    EXPECT_EQ(nbdtest::map_runs(nmap.out), nbdtest::map_runs(fmap.out));
    auto w =
        sh("qemu-io -f raw -c 'write -P 7 5M 256k' -c 'write -z 0 64k' '" + s.uri("top") + "'");
    EXPECT_EQ(w.rc, 0) << w.out << w.err;
    auto list = sh("nbdinfo --list '" + s.uri() + "'");
    EXPECT_EQ(list.rc, 0) << list.err;
    EXPECT_NE(list.out.find("export=\"top\""), std::string::npos) << list.out;
    ASSERT_TRUE(s.stop());
    EXPECT_EQ(sh("qemu-img check '" + d.file("top.qcow2") + "'").rc, 0);
    auto r =
        sh("qemu-io -f qcow2 -c 'read -P 7 5M 256k' -c 'read -P 0 0 64k' -c "
           "'read -P 1 64k 960k' '" +
           d.file("top.qcow2") + "'");
    EXPECT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos) << r.out;
  }
}

}  // namespace

namespace {

// A unix-socket client that reads the greeting and then says nothing.
int silent_client(const std::string& sock) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  char greeting[18];
  if (::recv(fd, greeting, sizeof greeting, MSG_WAITALL) != sizeof greeting) return -1;
  return fd;
}

// Whether the server closed fd within ms (poll sees the end of the stream).
bool closed_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, ms) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

// With -e 1 a client that connects and never finishes the handshake would keep every other
// client out; the handshake limit (qemu-nbd's --handshake-limit, CVE-2024-7409) drops it, and
// the next client is served. qemu-img runs under timeout(1), so a server without the limit fails
// this test rather than hanging it.
TEST(NbdInterop, AClientThatNeverFinishesTheHandshakeIsDropped) {
  REQUIRE_QEMU_IMG();
  imgtest::TempDir d;
  make_chain(d);
  NbdServer s(d, "s", kImgNbd,
              "-t -e 1 -r --handshake-limit 1 -f qcow2 '" + d.file("top.qcow2") + "'");
  int idle = silent_client(d.file("s.sock"));
  ASSERT_GE(idle, 0) << std::strerror(errno);
  auto info = sh("timeout 60 qemu-img info --output=json '" + s.uri() + "'");
  EXPECT_EQ(info.rc, 0) << info.err;
  EXPECT_EQ(imgtest::flat_json(info.out)["virtual-size"], "8388608");
  EXPECT_TRUE(closed_within(idle, 30000)) << "the silent client is still connected";
  ::close(idle);
}

TEST(NbdInterop, HandshakeLimitZeroMeansNone) {
  imgtest::TempDir d;
  make_chain(d);
  NbdServer s(d, "s", kImgNbd, "-t --handshake-limit 0 -f qcow2 -r '" + d.file("top.qcow2") + "'");
  int idle = silent_client(d.file("s.sock"));
  ASSERT_GE(idle, 0) << std::strerror(errno);
  EXPECT_FALSE(closed_within(idle, 2500)) << "dropped although there is no limit";
  ::close(idle);
  auto r = sh("'" + kImgNbd + "' --handshake-limit -1 x.qcow2");
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "img-nbd: Invalid handshake limit '-1'\n");
}

}  // namespace

namespace {

// -l / --load-snapshot: the export is the internal snapshot, read-only, as qemu-nbd -l serves it
// (qemu-img compare against qemu-img convert -l of the same snapshot; nbdinfo says read-only);
// a snapshot that is not there, a raw image and a bad parameter fail as qemu-nbd does.
TEST(NbdInterop, LoadSnapshotServesItReadOnly) {
  REQUIRE_QEMU_IMG();
  REQUIRE_TOOL("nbdinfo");
  imgtest::TempDir d;
  std::string f = d.file("s.qcow2");
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 " + f + " 4M && qemu-io -c 'write -P 1 0 1M' " + f +
               " && qemu-img snapshot -c first " + f + " && qemu-io -c 'write -P 2 0 512k' " + f)
                .rc,
            0);
  ASSERT_EQ(sh("qemu-img convert -l first -O raw " + f + " " + d.file("first.raw")).rc, 0);
  for (const char* l : {"first", "snapshot.name=first", "--load-snapshot=1"}) {
    SCOPED_TRACE(l);
    std::string flag = std::string(l).starts_with("--") ? l : std::string("-l ") + l;
    NbdServer s(d, "s", kImgNbd, "-t " + flag + " " + f);
    auto cmp = sh("qemu-img compare -f raw -F raw '" + s.uri() + "' " + d.file("first.raw"));
    EXPECT_EQ(cmp.rc, 0) << cmp.out << cmp.err;
    auto info = sh("nbdinfo '" + s.uri() + "'");
    EXPECT_NE(info.out.find("is_read_only: true"), std::string::npos) << info.out;
    auto w = sh("qemu-io -f raw -c 'write 0 512' '" + s.uri() + "'");
    EXPECT_NE(w.rc, 0) << w.out;
  }
  struct Bad {
    std::string args, err;
  };
  ASSERT_EQ(sh("qemu-img create -q -f raw " + d.file("r.raw") + " 1M").rc, 0);
  for (const Bad& b :
       {Bad{"-l nope " + f, "Failed to load snapshot: Can't find snapshot\n"},
        Bad{"-l x -f raw " + d.file("r.raw"),
            "Failed to load snapshot: Block format 'raw' used by device '' does not support "
            "temporarily loading internal snapshots\n"},
        Bad{"-l snapshot.foo=1 " + f,
            "Invalid parameter 'snapshot.foo'\nFailed in parsing snapshot param "
            "`snapshot.foo=1'\n"}}) {
    auto ours = sh("'" + kImgNbd + "' -k " + d.file("b.sock") + " " + b.args);
    auto theirs = sh("qemu-nbd -k " + d.file("b.sock") + " " + b.args);
    EXPECT_EQ(ours.rc, 1) << b.args;
    EXPECT_EQ(theirs.rc, 1) << b.args;
    EXPECT_EQ(imgtest::unprefixed(ours.err, "img-nbd"), b.err);
    EXPECT_EQ(imgtest::unprefixed(theirs.err, "qemu-nbd"), b.err);
  }
}

}  // namespace

namespace {

// NBD_CMD_FLAG_FAST_ZERO (proto.md): the server must fail with ENOTSUP rather than fall back to
// writing zeros. Whole clusters of a version 3 qcow2 are zeroed by the zero flag (fast); part
// of a cluster, or any range of a version 2 image (no zero flag: zero bytes are written), is
// refused. A raw file zeroes with fallocate, always fast. libnbd is the client here.
TEST(NbdInterop, FastZeroIsRefusedWhereZeroingWouldWrite) {
  REQUIRE_QEMU_IMG();
  imgtest::TempDir d;
  struct Case {
    std::string create;
    uint64_t off, len;
    bool fast;
  };
  const Case cases[] = {
      {"-f qcow2 -o compat=1.1", 0, 128 << 10, true},
      {"-f qcow2 -o compat=1.1", 4096, 64 << 10, false},
      {"-f qcow2 -o compat=0.10", 0, 128 << 10, false},
      {"-f raw", 4096, 4096, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.create + " at " + std::to_string(c.off) + "+" + std::to_string(c.len));
    std::string f = d.file("z.img");
    std::filesystem::remove(f);
    ASSERT_EQ(sh("qemu-img create -q " + c.create + " " + f + " 4M && qemu-io " +
                 c.create.substr(0, c.create.find(" -o")) + " -c 'write -P 9 0 1M' " + f)
                  .rc,
              0);
    NbdServer s(d, "z", kImgNbd, "-t " + c.create.substr(0, c.create.find(" -o")) + " " + f);
    nbd_handle* h = nbd_create();
    ASSERT_NE(h, nullptr);
    ASSERT_EQ(nbd_connect_uri(h, s.uri().c_str()), 0) << nbd_get_error();
    ASSERT_EQ(nbd_can_fast_zero(h), 1);
    int r = nbd_zero(h, c.len, c.off, LIBNBD_CMD_FLAG_FAST_ZERO);
    if (c.fast) {
      EXPECT_EQ(r, 0) << nbd_get_error();
    } else {
      EXPECT_EQ(r, -1);
      EXPECT_EQ(nbd_get_errno(), ENOTSUP) << nbd_get_error();
    }
    // Without the flag every zero write succeeds; the data read back is zeros either way.
    EXPECT_EQ(nbd_zero(h, c.len, c.off, 0), 0) << nbd_get_error();
    std::vector<char> buf(c.len, 1);
    ASSERT_EQ(nbd_pread(h, buf.data(), buf.size(), c.off, 0), 0) << nbd_get_error();
    EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), static_cast<long>(c.len));
    nbd_shutdown(h, 0);
    nbd_close(h);
  }
}

}  // namespace
