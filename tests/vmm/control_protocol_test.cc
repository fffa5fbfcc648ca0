// The control socket without KVM: the line framing, the dispatcher's request checks and replies,
// and the socket server against hostile clients (garbage, huge lines, deep nesting, a second
// client, a client that vanishes mid-reply).
#include "api/control_protocol.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "api/control_server.h"
#include "api/event_loop.h"
#include "img/unix_socket.h"

namespace vmm::api {
namespace {

Json reply(const Dispatcher& d, std::string_view line) {
  std::string r = d.handle_line(line);
  EXPECT_EQ(r.back(), '\n');
  EXPECT_EQ(r.find('\n'), r.size() - 1) << "a reply is one line: " << r;
  return Json::parse(r);
}

std::string error_class(const Json& j) { return j.contains("error") ? j["error"]["class"] : ""; }

Dispatcher test_dispatcher(int* calls) {
  Dispatcher d;
  d.add("info", {}, [calls](const Json&) -> CommandResult {
    ++*calls;
    return Json{{"state", "running"}};
  });
  d.add("shutdown", {"timeout"}, [](const Json& a) -> CommandResult {
    auto t = number_arg(a, "timeout", 0, 3600);
    if (!t) return std::unexpected(t.error());
    return Json{{"timeout", t->value_or(-1)}};
  });
  d.add("resume", {}, [](const Json&) -> CommandResult {
    return std::unexpected(wrong_state("the VM is running"));
  });
  d.add("throws", {}, [](const Json&) -> CommandResult { return Json::parse("{"); });
  return d;
}

TEST(LineBuffer, SplitsLinesAcrossFeedsAndStripsCarriageReturns) {
  LineBuffer b;
  b.feed("{\"a\"");
  EXPECT_FALSE(b.next());
  b.feed(":1}\r\n{}\nrest");
  EXPECT_EQ(b.next()->text, "{\"a\":1}");
  EXPECT_EQ(b.next()->text, "{}");
  EXPECT_FALSE(b.next());
  b.feed("\n");
  EXPECT_EQ(b.next()->text, "rest");
}

TEST(LineBuffer, AnOverlongLineIsReportedOnceAndTheNextLineIsServed) {
  LineBuffer b(16);
  b.feed(std::string(10, 'x'));
  b.feed(std::string(10, 'y'));  // over the bound now
  b.feed(std::string(1000, 'z'));
  b.feed("zzz\nok\n");
  auto l = b.next();
  ASSERT_TRUE(l);
  EXPECT_TRUE(l->too_long);
  EXPECT_TRUE(l->text.empty());
  EXPECT_EQ(b.next()->text, "ok");
  EXPECT_FALSE(b.next());
  // Exactly at the bound is fine.
  b.feed(std::string(16, 'a') + "\n");
  EXPECT_EQ(b.next()->text, std::string(16, 'a'));
}

TEST(Dispatcher, RunsACommandAndEchoesTheId) {
  int calls = 0;
  Dispatcher d = test_dispatcher(&calls);
  Json r = reply(d, R"({"execute": "info", "id": {"n": 7}})");
  EXPECT_EQ(r["return"]["state"], "running");
  EXPECT_EQ(r["id"]["n"], 7);
  EXPECT_EQ(calls, 1);
  r = reply(d, R"({"execute":"shutdown","arguments":{"timeout":2.5}})");
  EXPECT_EQ(r["return"]["timeout"], 2.5);
  EXPECT_FALSE(r.contains("id"));
}

TEST(Dispatcher, GreetingListsTheCommands) {
  int calls = 0;
  Json g = Json::parse(test_dispatcher(&calls).greeting());
  EXPECT_EQ(g["greeting"]["protocol"], "vmm-control");
  EXPECT_EQ(g["greeting"]["version"], kProtocolVersion);
  EXPECT_EQ(g["greeting"]["commands"], Json({"info", "resume", "shutdown", "throws"}));
}

TEST(Dispatcher, HostileRequestsGetOneLineErrors) {
  int calls = 0;
  Dispatcher d = test_dispatcher(&calls);
  struct Case {
    std::string line, cls, desc_has;
  } cases[] = {
      {"{", "InvalidRequest", "malformed JSON"},
      {"not json", "InvalidRequest", "malformed JSON"},
      {"{\"execute\":\"info\"} {}", "InvalidRequest", "malformed JSON"},
      {"[\"info\"]", "InvalidRequest", "not array"},
      {"42", "InvalidRequest", "not number"},
      {"{}", "InvalidRequest", "needs \"execute\""},
      {"{\"execute\": 3}", "InvalidRequest", "needs \"execute\""},
      {"{\"execute\":\"info\",\"extra\":1}", "InvalidRequest", "unexpected member 'extra'"},
      {"{\"execute\":\"nope\"}", "CommandNotFound", "unknown command 'nope' (commands: info,"},
      {"{\"execute\":\"info\",\"arguments\":[]}", "InvalidArgument", "must be an object"},
      {"{\"execute\":\"info\",\"arguments\":{\"x\":1}}", "InvalidArgument", "no argument 'x'"},
      {"{\"execute\":\"shutdown\",\"arguments\":{\"timeout\":\"5\"}}", "InvalidArgument",
       "'timeout' must be a number"},
      {"{\"execute\":\"shutdown\",\"arguments\":{\"timeout\":-1}}", "InvalidArgument",
       "between 0 and 3600"},
      {"{\"execute\":\"shutdown\",\"arguments\":{\"timeout\":1e999}}", "InvalidRequest",
       "malformed JSON"},
      {"{\"execute\":\"resume\"}", "WrongState", "the VM is running"},
      {"{\"execute\":\"throws\"}", "InternalError", "command failed"},
      {"{\"execute\":\"inf\xff\"}", "InvalidRequest", "malformed JSON"},  // ill-formed UTF-8
      {std::string(100000, '['), "InvalidRequest", "malformed JSON"},     // deep, not closed
  };
  for (const Case& c : cases) {
    Json r = reply(d, c.line);
    EXPECT_EQ(error_class(r), c.cls) << c.line.substr(0, 80) << " -> " << r.dump();
    std::string desc = r["error"]["desc"];
    EXPECT_NE(desc.find(c.desc_has), std::string::npos) << desc;
    EXPECT_LT(desc.size(), 400u) << "one short line";
  }
  EXPECT_EQ(calls, 0);
  // Deeply nested but well-formed: parsed (iteratively) and refused as not an object.
  std::string deep = std::string(50000, '[') + std::string(50000, ']');
  EXPECT_EQ(error_class(reply(d, deep)), "InvalidRequest");
}

TEST(Dispatcher, RepliesWithInvalidUtf8FromHandlersStayValidJson) {
  Dispatcher d;
  d.add("path", {}, [](const Json&) -> CommandResult { return Json{{"p", "/tmp/\xff\xfe"}}; });
  Json r = reply(d, R"({"execute":"path"})");
  EXPECT_TRUE(r["return"]["p"].is_string());
}

// A client of a ControlServer served on a loop thread.
class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("vmm_ctl_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "ctl.sock").string();
    d_ = test_dispatcher(&calls_);
    auto s = ControlServer::listen(path_, d_);
    ASSERT_TRUE(s) << s.error().to_string();
    server_ = std::move(*s);
    auto l = EventLoop::create();
    ASSERT_TRUE(l);
    loop_ = std::move(*l);
    ASSERT_TRUE(server_->attach(*loop_));
    thread_ = std::thread([this] {
      while (!stop_) (void)loop_->run_once(20);
    });
  }
  void TearDown() override {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  int connect_client() {
    int fd = img::unix_stream_connect(path_, SOCK_CLOEXEC);
    EXPECT_GE(fd, 0) << path_ << ": " << strerror(errno);
    return fd;
  }
  // Reads one line (up to 5 s); "" on EOF or timeout.
  static std::string read_line(int fd) {
    std::string s;
    char c;
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) return "";
      if (read(fd, &c, 1) != 1) return "";
      if (c == '\n') return s;
      s += c;
    }
  }
  static void write_all(int fd, const std::string& s) {
    ASSERT_EQ(write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  }

  std::filesystem::path dir_;
  std::string path_;
  int calls_ = 0;
  Dispatcher d_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<EventLoop> loop_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(ControlServerTest, ServesRequestsOnASocketOnlyItsUserMayOpen) {
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int c = connect_client();
  EXPECT_NE(read_line(c).find("\"greeting\""), std::string::npos);
  write_all(c, "{\"execute\":\"info\"}\n\n   \n{\"execute\":\"info\",\"id\":1}\r\n");
  EXPECT_EQ(Json::parse(read_line(c))["return"]["state"], "running");
  EXPECT_EQ(Json::parse(read_line(c))["id"], 1);
  close(c);
}

// CI builds in deep directories: a --control path past sockaddr_un's 107 bytes (here ~180) is
// served like a short one, with the same 0600 mode and the same stale-socket handling.
TEST_F(ControlServerTest, APathLongerThanSockaddrUnHoldsIsServedToo) {
  std::filesystem::path deep = dir_ / std::string(80, 'd') / std::string(80, 'e');
  std::filesystem::create_directories(deep);
  std::string path = (deep / "ctl.sock").string();
  ASSERT_GT(path.size(), sizeof(sockaddr_un::sun_path));
  auto s = ControlServer::listen(path, d_);
  ASSERT_TRUE(s) << s.error().to_string();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto l = EventLoop::create();
  ASSERT_TRUE(l);
  ASSERT_TRUE((*s)->attach(**l));
  int c = img::unix_stream_connect(path, SOCK_CLOEXEC);
  ASSERT_GE(c, 0) << strerror(errno);
  for (int i = 0; i < 10; ++i) (void)(*l)->run_once(20);
  EXPECT_NE(read_line(c).find("\"greeting\""), std::string::npos);
  close(c);
  // A second vmm on the same long path is refused while the first is alive.
  auto again = ControlServer::listen(path, d_);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("in use by a running vmm"), std::string::npos);
  s->reset();
  EXPECT_NE(stat(path.c_str(), &st), 0) << "the socket file outlived its server";
}

TEST_F(ControlServerTest, HugeLinesGarbageAndASecondClientGetErrorsAndTheServerGoesOn) {
  int c = connect_client();
  read_line(c);
  // 1 MiB without a newline, then the newline: one error, then a good request is served.
  std::string big(1 << 20, 'x');
  std::thread writer([&] { write_all(c, big + "\n{\"execute\":\"info\"}\n"); });
  Json r = Json::parse(read_line(c));
  EXPECT_EQ(r["error"]["class"], "InvalidRequest");
  EXPECT_NE(std::string(r["error"]["desc"]).find("longer than 65536 bytes"), std::string::npos);
  EXPECT_EQ(Json::parse(read_line(c))["return"]["state"], "running");
  writer.join();
  write_all(c, std::string("\x00\x01garbage\xff\n", 11));
  EXPECT_EQ(Json::parse(read_line(c))["error"]["class"], "InvalidRequest");

  int second = connect_client();
  r = Json::parse(read_line(second));
  EXPECT_EQ(r["error"]["class"], "Busy");
  EXPECT_EQ(read_line(second), "") << "the second client is closed";
  close(second);
  write_all(c, "{\"execute\":\"info\"}\n");
  EXPECT_EQ(Json::parse(read_line(c))["return"]["state"], "running") << "first client unharmed";
  close(c);
}

TEST_F(ControlServerTest, AClientThatVanishesMidReplyOrNeverReadsIsDropped) {
  // Many requests, then gone before reading a byte: replies hit a closed socket (EPIPE, which
  // must not kill the process with SIGPIPE: MSG_NOSIGNAL).
  int c = connect_client();
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "{\"execute\":\"info\"}\n";
  write_all(c, many);
  shutdown(c, SHUT_RD);
  close(c);
  // A client that never reads its replies: dropped once 1 MiB is pending, not buffered forever.
  int hog = connect_client();
  int small = 4096;
  setsockopt(hog, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::string req = "{\"execute\":\"info\"}\n";
  std::string burst;
  for (int i = 0; i < 4000; ++i) burst += req;
  bool dropped = false;
  for (int i = 0; i < 200 && !dropped; ++i) {
    pollfd p{hog, POLLOUT, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    dropped =
        ::send(hog, burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN;
  }
  EXPECT_TRUE(dropped) << "the server closed a client that never reads";
  close(hog);
  // The server still serves a new client.
  for (int i = 0; i < 100; ++i) {
    int n = connect_client();
    std::string g = read_line(n);
    if (g.find("greeting") != std::string::npos) {
      write_all(n, req);
      EXPECT_EQ(Json::parse(read_line(n))["return"]["state"], "running");
      close(n);
      return;
    }
    close(n);  // Busy: the old client is not dropped yet
    usleep(20000);
  }
  FAIL() << "no greeting for a new client";
}

TEST_F(ControlServerTest, ALivePathIsRefusedAStaleOneReplacedANonSocketRefused) {
  auto again = ControlServer::listen(path_, d_);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("is in use by a running vmm"), std::string::npos);
  std::string file = (dir_ / "plain").string();
  close(open(file.c_str(), O_CREAT | O_WRONLY, 0600));
  auto f = ControlServer::listen(file, d_);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message().find("exists and is not a socket"), std::string::npos);
  // A stale socket: bound once, nobody listening.
  std::string stale = (dir_ / "stale.sock").string();
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(img::unix_bind(s, stale), 0) << strerror(errno);
  close(s);
  auto st = ControlServer::listen(stale, d_);
  EXPECT_TRUE(st) << st.error().to_string();
  // A name no sockaddr_un can hold, even through /proc/self/fd: refused, naming the path.
  auto longp = ControlServer::listen((dir_ / std::string(200, 'a')).string(), d_);
  ASSERT_FALSE(longp);
  EXPECT_NE(longp.error().message().find("--control " + dir_.string() + "/aaaa"), std::string::npos)
      << longp.error().to_string();
  EXPECT_NE(longp.error().message().find("File name too long"), std::string::npos)
      << longp.error().to_string();
  auto empty = ControlServer::listen("", d_);
  ASSERT_FALSE(empty);
}

}  // namespace
}  // namespace vmm::api
