// `vmm run --rng`, `--console`, `--net`, `--balloon` and `--scsi` option parsing (machine/config.h): what a user types, the values
// the devices get, and the messages for what is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>

#include "machine/config.h"

namespace vmm {
namespace {

TEST(RngOption, BareMeansUnlimitedWithTheDefaultCap) {
  for (const char* s : {"", "on"}) {
    auto r = parse_rng_spec(s);
    ASSERT_TRUE(r) << s;
    EXPECT_EQ(r->rate, 0u);
    EXPECT_EQ(r->max_request, 64u << 10);
  }
}

TEST(RngOption, RateAndMaxRequestTakeSizes) {
  auto r = parse_rng_spec("rate=64K/s,max-request=4K");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rate, 64u << 10);
  EXPECT_EQ(r->max_request, 4096u);
  r = parse_rng_spec("rate=1M");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rate, 1u << 20);
}

TEST(RngOption, RefusesNonsenseWithAMessage) {
  auto r = parse_rng_spec("rate=0");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("above 0"), std::string::npos);
  EXPECT_FALSE(parse_rng_spec("rate=fast"));
  EXPECT_FALSE(parse_rng_spec("max-request=0"));
  EXPECT_FALSE(parse_rng_spec("max-request=2M"));
  r = parse_rng_spec("speed=1");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("unknown option 'speed=1'"), std::string::npos);
}

TEST(ConsoleOption, StdioFileAndSocket) {
  auto c = parse_console_spec("stdio");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, ConsoleSpec::Kind::kStdio);
  c = parse_console_spec("file=/tmp/x.log");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, ConsoleSpec::Kind::kFile);
  EXPECT_EQ(c->path, "/tmp/x.log");
  c = parse_console_spec("socket=/run/con.sock");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, ConsoleSpec::Kind::kSocket);
  EXPECT_EQ(c->path, "/run/con.sock");
  for (const char* bad : {"", "file=", "socket=", "unix:/x", "tcp=1"}) {
    auto b = parse_console_spec(bad);
    ASSERT_FALSE(b) << bad;
    EXPECT_NE(b.error().message().find("stdio, file=PATH or socket=PATH"), std::string::npos);
  }
}

TEST(SerialPortOption, ANameAndASocketOrAFile) {
  auto p = parse_serial_port_spec("name=org.qemu.guest_agent.0,path=/run/qga.sock");
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->name, "org.qemu.guest_agent.0");
  EXPECT_EQ(p->path, "/run/qga.sock");
  EXPECT_FALSE(p->file);
  p = parse_serial_port_spec("file=/tmp/log.txt,name=log");
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_TRUE(p->file);
  EXPECT_EQ(p->path, "/tmp/log.txt");
  struct Bad {
    const char* spec;
    const char* says;
  } bad[] = {
      {"path=/s", "cannot be empty"},
      {"name=a/b,path=/s", "only letters"},
      {"name=a", "needs path=SOCKET"},
      {"name=a,path=", "unknown option 'path='"},
      {"name=a,path=/s,file=/f", "path= or file=, once"},
      {"name=a,path=/s,mode=rw", "unknown option 'mode=rw'"},
  };
  for (const Bad& b : bad) {
    auto r = parse_serial_port_spec(b.spec);
    ASSERT_FALSE(r) << b.spec;
    EXPECT_NE(r.error().message().find(b.says), std::string::npos) << r.error().message();
  }
}

TEST(NetOption, TapCreatesOrAttachesWithAnOptionalMac) {
  auto n = parse_net_spec("tap");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->tap, "");
  EXPECT_FALSE(n->mac);
  n = parse_net_spec("tap=tap0");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->tap, "tap0");
  n = parse_net_spec("tap=vm1,mac=02:AB:00:00:00:ff");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->tap, "vm1");
  ASSERT_TRUE(n->mac);
  EXPECT_EQ(*n->mac, (std::array<uint8_t, 6>{0x02, 0xab, 0, 0, 0, 0xff}));
  n = parse_net_spec("tap,mac=52:54:00:12:34:56");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->tap, "");
  EXPECT_EQ((*n->mac)[5], 0x56);
  n = parse_net_spec("bridge=br-lab.0,mac=02:00:00:00:00:07");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->bridge, "br-lab.0");
  EXPECT_EQ(n->tap, "");
  EXPECT_EQ(net_spec_text(*n), "bridge=br-lab.0,mac=02:00:00:00:00:07");
  n = parse_net_spec("network=default");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->network, "default");
  EXPECT_EQ(net_spec_text(*n), "network=default");
  EXPECT_EQ(net_spec_text(*parse_net_spec("tap=vm1")), "tap=vm1");
  EXPECT_EQ(net_spec_text(*parse_net_spec("tap")), "tap");
}

TEST(NetOption, RefusesNonsenseWithAMessage) {
  auto expect_error = [](const char* s, const char* msg) {
    auto n = parse_net_spec(s);
    ASSERT_FALSE(n) << s;
    EXPECT_NE(n.error().message().find(msg), std::string::npos) << s << ": " << n.error().message();
  };
  const char* must = "--net must be tap, tap=NAME, bridge=BR or network=NAME";
  expect_error("", must);
  expect_error("user", must);
  expect_error("tap=", must);
  expect_error("bridge=", must);
  expect_error("network=", must);
  expect_error("bridge=sixteen-chars-xx", "must be 1 to 15 characters");
  expect_error("bridge=a/b", "may not hold '/'");
  expect_error("network=../x", "--net network name '../x' must be 1 to 64 of");
  expect_error("tap=averyveryverylongname", "longer than 15 characters");
  expect_error("tap,mac=01:00:5e:00:00:01", "multicast");
  expect_error("tap,mac=02:00:00:00:00", "must look like 02:00:00:00:00:01");
  expect_error("tap,mac=02-00-00-00-00-01", "must look like");
  expect_error("tap,mac=0g:00:00:00:00:01", "must look like");
  expect_error("tap,vhost=on", "unknown option 'vhost=on'");
}

TEST(BalloonOption, TargetAndStats) {
  auto b = parse_balloon_spec("");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->target);
  EXPECT_EQ(b->stats_seconds, 0u);
  b = parse_balloon_spec("target=256M,stats=5");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b->target, 256u << 20);
  EXPECT_EQ(b->stats_seconds, 5u);
  for (const char* bad : {"target=", "target=1000", "stats=-1", "stats=x", "stats=9999", "size=1G"}) {
    EXPECT_FALSE(parse_balloon_spec(bad)) << bad;
  }
  MachineConfig c;
  c.kernel = "k";
  c.memory = 64 << 20;
  c.balloon = BalloonSpec{uint64_t{128} << 20, 0};
  auto s = validate(c);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("--balloon target is larger than --memory"), std::string::npos);
}

TEST(ScsiOption, PathWithFormatCacheAndReadonly) {
  auto d = parse_scsi_spec("disk.qcow2");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->path, "disk.qcow2");
  EXPECT_EQ(d->format, "");
  EXPECT_FALSE(d->read_only);
  EXPECT_FALSE(d->direct);
  EXPECT_TRUE(d->write_cache);
  d = parse_scsi_spec("/a/b.img,format=raw,cache=writethrough,readonly");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->path, "/a/b.img");
  EXPECT_EQ(d->format, "raw");
  EXPECT_TRUE(d->read_only);
  EXPECT_FALSE(d->write_cache);
  d = parse_scsi_spec("x,cache=none,readonly=off");
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->direct);
  EXPECT_TRUE(d->write_cache);  // cache=none keeps writeback semantics, as QEMU's does
  EXPECT_FALSE(d->read_only);
}

TEST(ScsiOption, RefusesNonsenseWithAMessage) {
  struct Case {
    const char* in;
    const char* says;
  } cases[] = {{"", "--scsi needs a path"},
               {",format=raw", "--scsi needs a path"},
               {"d,format=vmdk", "format must be raw or qcow2"},
               {"d,cache=unsafe", "cache must be none, writeback or writethrough"},
               {"d,readonly=maybe", "readonly must be on or off"},
               {"d,lun=3", "unknown option 'lun=3'"}};
  for (const Case& c : cases) {
    auto d = parse_scsi_spec(c.in);
    ASSERT_FALSE(d) << c.in;
    EXPECT_NE(d.error().message().find(c.says), std::string::npos) << d.error().message();
  }
  MachineConfig m;
  m.kernel = "k";
  m.scsi.resize(257);
  auto s = validate(m);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("at most 256 LUNs"), std::string::npos);
}

TEST(DiskOption, AnImageGivenTwiceIsRefusedUnlessReadOnlyBoth) {
  // The same file under two names (a symlink), as a --disk and as a --scsi LUN.
  std::string dir = ::testing::TempDir();
  std::string a = dir + "/twice.raw", b = dir + "/twice-link.raw";
  FILE* f = std::fopen(a.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  ::unlink(b.c_str());
  ASSERT_EQ(::symlink(a.c_str(), b.c_str()), 0);
  MachineConfig m;
  m.kernel = "k";
  m.disks.push_back(DiskSpec{a, "raw", false, false});
  m.scsi.push_back(ScsiSpec{b, "raw", true, false, true});
  auto s = validate(m);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), "--scsi " + b + ": the same image as --disk " + a +
                                     "; an image can back two disks only if both are readonly=on");
  m.disks[0].read_only = true;
  EXPECT_TRUE(validate(m));
  m.disks.push_back(DiskSpec{a, "raw", false, false});
  EXPECT_FALSE(validate(m));
  ::unlink(b.c_str());
  ::unlink(a.c_str());
}

}  // namespace
}  // namespace vmm
