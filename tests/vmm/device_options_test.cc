// `vmm run --rng` and `--console` option parsing (machine/config.h): what a user types, the values
// the devices get, and the messages for what is refused.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace vmm
