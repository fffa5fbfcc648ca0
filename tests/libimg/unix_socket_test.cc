// img/unix_socket.h: bind and connect by a path of any length.
#include "img/unix_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;

// A listener at `path` and a client connected to it exchange a byte both ways.
void expect_round_trip(const std::string& path) {
  int l = img::unix_stream_listen(path, SOCK_CLOEXEC, 1);
  ASSERT_GE(l, 0) << path << ": " << strerror(errno);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << "the socket is not at " << path;
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  int c = img::unix_stream_connect(path, SOCK_CLOEXEC);
  ASSERT_GE(c, 0) << path << ": " << strerror(errno);
  int a = accept(l, nullptr, nullptr);
  ASSERT_GE(a, 0) << strerror(errno);
  char b = 'x';
  ASSERT_EQ(write(c, "q", 1), 1);
  ASSERT_EQ(read(a, &b, 1), 1);
  EXPECT_EQ(b, 'q');
  ASSERT_EQ(write(a, "r", 1), 1);
  ASSERT_EQ(read(c, &b, 1), 1);
  EXPECT_EQ(b, 'r');
  close(a);
  close(c);
  close(l);
}

TEST(UnixSocket, AShortPathWorksAsPlainBindAndConnect) {
  img::test::TempDir d;
  expect_round_trip(d.file("s.sock"));
}

TEST(UnixSocket, APathLongerThanSockaddrUnIsReachedThroughProcSelfFd) {
  img::test::TempDir d;
  fs::path deep = d.path() / std::string(100, 'a') / std::string(100, 'b');
  fs::create_directories(deep);
  std::string path = (deep / "s.sock").string();
  ASSERT_GT(path.size(), sizeof(sockaddr_un::sun_path));
  expect_round_trip(path);
}

TEST(UnixSocket, ALongRelativePathWorksFromItsDirectory) {
  img::test::TempDir d;
  fs::path rel = fs::path(std::string(90, 'c')) / std::string(90, 'd');
  fs::create_directories(d.path() / rel);
  fs::path cwd = fs::current_path();
  fs::current_path(d.path());
  expect_round_trip((rel / "s.sock").string());
  fs::current_path(cwd);
  EXPECT_TRUE(fs::exists(d.path() / rel / "s.sock"));
}

TEST(UnixSocket, ErrorsAreTheSystemCallsErrnos) {
  img::test::TempDir d;
  fs::path deep = d.path() / std::string(120, 'e');
  fs::create_directories(deep);
  // Nothing there: ENOENT, by both routes.
  errno = 0;
  EXPECT_LT(img::unix_stream_connect(d.file("none.sock"), SOCK_CLOEXEC), 0);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_LT(img::unix_stream_connect((deep / "none.sock").string(), SOCK_CLOEXEC), 0);
  EXPECT_EQ(errno, ENOENT);
  // A socket nobody listens on any more: ECONNREFUSED, by both routes.
  for (std::string p : {d.file("stale.sock"), (deep / "stale.sock").string()}) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(img::unix_bind(s, p), 0) << p << ": " << strerror(errno);
    close(s);
    errno = 0;
    EXPECT_LT(img::unix_stream_connect(p, SOCK_CLOEXEC), 0) << p;
    EXPECT_EQ(errno, ECONNREFUSED) << p;
    // Binding over an existing file: EADDRINUSE, and nothing is left open.
    errno = 0;
    EXPECT_LT(img::unix_stream_listen(p, SOCK_CLOEXEC, 1), 0);
    EXPECT_EQ(errno, EADDRINUSE) << p;
  }
  // A missing parent directory on the long route: ENOENT.
  errno = 0;
  EXPECT_LT(img::unix_stream_listen((deep / "no-dir" / "s.sock").string(), SOCK_CLOEXEC, 1), 0);
  EXPECT_EQ(errno, ENOENT);
  // A file name that no sockaddr_un holds, even after /proc/self/fd/N/: ENAMETOOLONG.
  errno = 0;
  EXPECT_LT(img::unix_stream_listen((deep / std::string(150, 'f')).string(), SOCK_CLOEXEC, 1), 0);
  EXPECT_EQ(errno, ENAMETOOLONG);
  errno = 0;
  EXPECT_LT(img::unix_stream_connect("", SOCK_CLOEXEC), 0);
  EXPECT_EQ(errno, EINVAL);
}

}  // namespace
