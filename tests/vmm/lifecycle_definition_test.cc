// The definition file of the lifecycle commands (vmm/lifecycle/definition.h): what a hand-written
// file gets wrong is named in one line (bad JSON, an unknown version, a missing or unknown member,
// a wrong type); what `vmm define --name` stores reads back the same and boots the same: its
// `vmm run` arguments parse, through vmm run's own flags, to the same machine.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "lifecycle/definition.h"
#include "lifecycle/run_flags.h"
#include "machine/config.h"

namespace vmm::lifecycle {
namespace {

const char* kMinimal = R"({"format": "vmm-domain", "version": 1, "name": "demo",
  "uuid": "e7d36daa-5636-4014-b225-17d5ec864a82", "vcpus": 2, "memory": 67108864,
  "kernel": "/boot/vmlinuz"})";

std::string error_of(const std::string& text) {
  auto d = parse_definition(text, "demo.json");
  return d ? std::string("(parsed)") : d.error().message();
}

TEST(LifecycleDefinitionTest, MinimalFileParsesWithDefaults) {
  auto d = parse_definition(kMinimal, "demo.json");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->name, "demo");
  EXPECT_EQ(d->config.cpus, 2u);
  EXPECT_EQ(d->config.memory, 64u << 20);
  EXPECT_EQ(d->config.kernel, "/boot/vmlinuz");
  EXPECT_TRUE(d->config.disks.empty());
  EXPECT_FALSE(d->config.balloon);
  EXPECT_TRUE(d->config.pvm_workarounds);
}

TEST(LifecycleDefinitionTest, BadJsonIsNamed) {
  EXPECT_TRUE(error_of("{\"format\": ").starts_with("demo.json: not valid JSON: "))
      << error_of("{");
  EXPECT_TRUE(error_of("nope").starts_with("demo.json: not valid JSON: "));
  EXPECT_EQ(error_of("[1, 2]"), "demo.json: not a JSON object");
}

TEST(LifecycleDefinitionTest, UnknownVersionAndFormatAreRefused) {
  std::string v2 = kMinimal;
  v2.replace(v2.find("\"version\": 1"), 12, "\"version\": 2");
  EXPECT_EQ(error_of(v2), "demo.json: unknown version 2 (this vmm reads version 1)");
  EXPECT_EQ(error_of(R"({"format": "vmm-domain", "name": "x"})"),
            "demo.json: missing member 'version' (an integer)");
  EXPECT_EQ(error_of(R"({"format": "libvirt", "version": 1})"),
            "demo.json: 'format' is 'libvirt', not 'vmm-domain'");
}

TEST(LifecycleDefinitionTest, MissingUnknownAndMistypedMembersAreNamed) {
  EXPECT_EQ(error_of(R"({"format": "vmm-domain", "version": 1, "name": "demo", "uuid": "u",
                         "vcpus": 1, "kernel": "/k"})"),
            "demo.json: missing member 'memory'");
  std::string extra = std::string(kMinimal);
  extra.insert(extra.size() - 1, R"(, "vpcus": 4)");
  EXPECT_EQ(error_of(extra), "demo.json: unknown member 'vpcus'");
  std::string mistyped = std::string(kMinimal);
  mistyped.insert(mistyped.size() - 1, R"(, "disks": [{"path": "/d.img", "readonly": "yes"}])");
  EXPECT_EQ(error_of(mistyped), "demo.json: disks[0]: 'readonly' must be true or false");
  std::string neg = std::string(kMinimal);
  neg.replace(neg.find("\"vcpus\": 2"), 10, "\"vcpus\": -1");
  EXPECT_EQ(error_of(neg), "demo.json: 'vcpus' must be a non-negative integer");
  std::string badmac = std::string(kMinimal);
  badmac.insert(badmac.size() - 1, R"(, "nics": [{"tap": "tap0", "mac": "01:00:00:00:00:01"}])");
  EXPECT_EQ(error_of(badmac),
            "demo.json: nics[0]: --net mac 01:00:00:00:00:01 is a multicast address");
  std::string two = std::string(kMinimal);
  two.insert(two.size() - 1, R"(, "nics": [{"tap": "tap0", "bridge": "br0"}])");
  EXPECT_EQ(error_of(two), "demo.json: nics[0]: give at most one of 'tap', 'bridge' and 'network'");
  std::string badbr = std::string(kMinimal);
  badbr.insert(badbr.size() - 1, R"(, "nics": [{"bridge": "a:b"}])");
  EXPECT_EQ(error_of(badbr),
            "demo.json: nics[0]: --net bridge name 'a:b' may not hold '/', ':', spaces or control "
            "characters");
  std::string badname = std::string(kMinimal);
  badname.replace(badname.find("\"demo\""), 6, "\"../x\"");
  EXPECT_EQ(error_of(badname), "demo.json: VM name '../x' may not start with '.' or '-'");
  std::string mem = std::string(kMinimal);
  mem.replace(mem.find("67108864"), 8, "1000");
  EXPECT_EQ(error_of(mem), "demo.json: --memory must be between 16M and 1T, got 1000 bytes");
}

TEST(LifecycleDefinitionTest, NamesThatCannotBeFilesAreRefused) {
  EXPECT_TRUE(check_name("web-1.example_2+x"));
  EXPECT_FALSE(check_name(""));
  EXPECT_FALSE(check_name("a/b"));
  EXPECT_FALSE(check_name(".hidden"));
  EXPECT_FALSE(check_name(std::string(65, 'a')));
}

TEST(LifecycleDefinitionTest, UuidsAreVersion4AndDiffer) {
  std::string a = new_uuid(), b = new_uuid();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '4');
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos);
}

TEST(LifecycleDefinitionTest, DiskTargetsFollowLinuxNames) {
  EXPECT_EQ(disk_target(false, 0), "vda");
  EXPECT_EQ(disk_target(false, 25), "vdz");
  EXPECT_EQ(disk_target(false, 26), "vdaa");
  EXPECT_EQ(disk_target(true, 1), "sdb");
}

// Parses a `vmm run` command line with vmm run's own flags.
MachineConfig parse_run(const std::vector<std::string>& args) {
  CLI::App app;
  RunFlags f;
  add_run_flags(app, f, true);
  std::vector<std::string> rev(args.rbegin(), args.rend());
  app.parse(rev);
  auto c = to_config(app, f);
  EXPECT_TRUE(c) << c.error().message();
  return c ? *c : MachineConfig{};
}

TEST(LifecycleDefinitionTest, EverythingRunTakesRoundTripsThroughTheFileAndBootsTheSame) {
  MachineConfig want = parse_run({"--kernel",
                                  "/k",
                                  "--initrd",
                                  "/i",
                                  "--cmdline",
                                  "console=ttyS0 quiet",
                                  "--memory",
                                  "256M",
                                  "--cpus",
                                  "2",
                                  "--disk",
                                  "/a.qcow2,format=qcow2,cache=none",
                                  "--disk",
                                  "/b.raw,readonly=on",
                                  "--scsi",
                                  "/c.raw,cache=writethrough",
                                  "--net",
                                  "tap=tap0,mac=02:00:00:00:00:07",
                                  "--net",
                                  "tap",
                                  "--net",
                                  "bridge=br0,mac=02:00:00:00:00:08",
                                  "--net",
                                  "network=lab",
                                  "--rng",
                                  "rate=64K/s",
                                  "--console",
                                  "file=/con.txt",
                                  "--serial-port",
                                  "name=org.example.0,path=/p.sock",
                                  "--serial-port",
                                  "name=log,file=/log.txt",
                                  "--balloon",
                                  "target=128M,stats=5",
                                  "--hugepages",
                                  "--mem-prealloc",
                                  "--no-pvm-workarounds",
                                  "--seccomp",
                                  "log",
                                  "--on-reboot",
                                  "restart",
                                  "--user",
                                  "nobody",
                                  "--group",
                                  "nogroup"});
  Definition d{"demo", new_uuid(), want};
  auto back = parse_definition(to_json(d), "demo.json");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(to_json(*back), to_json(d));
  auto args = run_args(*back);
  ASSERT_TRUE(args) << args.error().message();
  MachineConfig got = parse_run(*args);
  EXPECT_EQ(to_json({"demo", d.uuid, got}), to_json(d));
  ASSERT_EQ(got.disks.size(), 2u);
  EXPECT_TRUE(got.disks[0].direct);
  EXPECT_TRUE(got.disks[1].read_only);
  ASSERT_EQ(got.scsi.size(), 1u);
  EXPECT_FALSE(got.scsi[0].write_cache);
  EXPECT_EQ(got.balloon->target, 128u << 20);
  EXPECT_EQ(got.rng->rate, 64u << 10);
  EXPECT_FALSE(got.pvm_workarounds);
  EXPECT_TRUE(got.mem_prealloc);
  EXPECT_TRUE(got.hugepages);
  ASSERT_EQ(got.serial_ports.size(), 2u);
  EXPECT_EQ(got.serial_ports[0].name, "org.example.0");
  EXPECT_EQ(got.serial_ports[0].path, "/p.sock");
  EXPECT_FALSE(got.serial_ports[0].file);
  ASSERT_EQ(got.nets.size(), 4u);
  EXPECT_EQ(got.nets[2].bridge, "br0");
  EXPECT_EQ(got.nets[3].network, "lab");
  EXPECT_TRUE(got.serial_ports[1].file);
  EXPECT_NE(to_json(d).find(R"("serial_ports": [)"), std::string::npos) << to_json(d);
  EXPECT_EQ(got.seccomp, "log");
  EXPECT_EQ(got.on_reboot, OnReboot::kRestart);
  EXPECT_EQ(got.user, "nobody");
  EXPECT_EQ(got.group, "nogroup");
}

// The hardening flags in a file: the default filter when absent, checked like the flags.
TEST(LifecycleDefinitionTest, SeccompUserAndGroupInAFileAreCheckedLikeTheFlags) {
  auto d = parse_definition(kMinimal, "demo.json");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->config.seccomp, kDefaultSeccomp);
  EXPECT_TRUE(d->config.user.empty());
  auto args = run_args(*d);
  ASSERT_TRUE(args);
  EXPECT_EQ(parse_run(*args).seccomp, kDefaultSeccomp);
  std::string base = kMinimal;
  base.pop_back();
  auto with = [&](const std::string& more) { return error_of(base + ", " + more + "}"); };
  EXPECT_EQ(with(R"("seccomp": "off", "user": "65534", "group": "65534")"), "(parsed)");
  EXPECT_NE(with(R"("seccomp": "strict")").find("--seccomp must be off, log or on"),
            std::string::npos);
  EXPECT_NE(with(R"("group": "nogroup")").find("--group needs --user"), std::string::npos);
  EXPECT_NE(with(R"("user": 65534)").find("user"), std::string::npos);
}

// on_reboot: libvirt's default (restart) when absent, as in definitions written before it.
TEST(LifecycleDefinitionTest, OnRebootDefaultsToRestartAndTakesItsTwoWords) {
  auto d = parse_definition(kMinimal, "demo.json");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->config.on_reboot, OnReboot::kRestart);
  EXPECT_NE(to_json(*d).find(R"("on_reboot": "restart")"), std::string::npos) << to_json(*d);
  auto args = run_args(*d);
  ASSERT_TRUE(args);
  EXPECT_EQ(parse_run(*args).on_reboot, OnReboot::kRestart);
  std::string base = kMinimal;
  base.pop_back();
  auto with = [&](const std::string& more) { return error_of(base + ", " + more + "}"); };
  EXPECT_EQ(with(R"("on_reboot": "destroy")"), "(parsed)");
  EXPECT_NE(with(R"("on_reboot": "reset")").find("'on_reboot' must be \"restart\" or \"destroy\""),
            std::string::npos);
  EXPECT_NE(with(R"("on_reboot": true)").find("on_reboot"), std::string::npos);
}

TEST(LifecycleDefinitionTest, SerialPortsInAFileAreCheckedLikeTheFlag) {
  std::string base = kMinimal;
  base.pop_back();  // the closing brace
  auto with = [&](const std::string& ports) {
    return error_of(base + R"(, "serial_ports": )" + ports + "}");
  };
  EXPECT_EQ(with(R"([{"name": "a.b", "socket": "/s"}])"), "(parsed)");
  EXPECT_NE(with(R"([{"name": "a b", "socket": "/s"}])").find("only letters"), std::string::npos);
  EXPECT_NE(with(R"([{"name": "a", "socket": "/s", "file": "/f"}])").find("exactly one"),
            std::string::npos);
  EXPECT_NE(with(R"([{"name": "a", "socket": "/s,x"}])").find("contains a comma"),
            std::string::npos);
  EXPECT_NE(
      with(R"([{"name": "a", "socket": "/s"}, {"name": "a", "file": "/f"}])").find("given twice"),
      std::string::npos);
  EXPECT_NE(with(R"([{"name": "a", "tcp": "x"}])").find("tcp"), std::string::npos);
}

}  // namespace
}  // namespace vmm::lifecycle
