// QEMU's image locks (io/image_lock.h): the bytes each kind of open holds, side by side with
// qemu-io's; conflicts inside one process and with qemu-io/qemu-img in either direction, in
// qemu's words; release on close; and a file system that cannot lock.
#include "io/image_lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "img/image.h"
#include "img/ops.h"
#include "lock_probe.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img {
namespace {

using test::held_lock_bytes;
using V = std::vector<int>;

class ImageLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = test::make_loop();
    qcow2_ = dir_.file("disk.qcow2");
    raw_ = dir_.file("disk.raw");
    ASSERT_TRUE(loop_->run(create_image(*loop_, qcow2_, "qcow2", 1 << 20, {})));
    ASSERT_TRUE(loop_->run(create_image(*loop_, raw_, "raw", 1 << 20, {})));
  }
  Result<std::unique_ptr<BlockDriver>> open(const std::string& path, bool ro, bool share = false) {
    return loop_->run(open_image(*loop_, path, {.read_only = ro, .force_share = share}));
  }
  void close(std::unique_ptr<BlockDriver>& d) {
    ASSERT_TRUE(loop_->run(d->close()));
    d.reset();
  }
  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_;
  std::string qcow2_, raw_;
};

std::string conflict(const std::string& what, const std::string& path) {
  return what + "\nIs another process using the image [" + path + "]?";
}

TEST_F(ImageLockTest, BytesHeldPerKindOfOpenAndGoneAfterClose) {
  // The sets qemu-io 7.2 holds (LockInterop below checks them against it): a qcow2 writer
  // holds consistent read, write and resize and shares neither write nor resize.
  struct Case {
    std::string path;
    bool ro, share;
    V want;
  };
  for (const Case& c : std::vector<Case>{{qcow2_, false, false, {100, 101, 103, 201, 203}},
                                         {qcow2_, true, false, {100, 201, 203}},
                                         {qcow2_, true, true, {100}},
                                         {raw_, false, false, {100, 101}},
                                         {raw_, true, false, {100}},
                                         {raw_, true, true, {100}}}) {
    SCOPED_TRACE(c.path + (c.ro ? " ro" : " rw") + (c.share ? " -U" : ""));
    auto d = open(c.path, c.ro, c.share);
    ASSERT_TRUE(d) << d.error().to_string();
    EXPECT_EQ(held_lock_bytes(c.path), c.want);
    close(*d);
    EXPECT_EQ(held_lock_bytes(c.path), V{});
  }
}

TEST_F(ImageLockTest, TwoOpensInOneProcessConflictAsTwoProcessesDo) {
  auto writer = open(qcow2_, false);
  ASSERT_TRUE(writer);
  auto second = open(qcow2_, false);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), ErrorCode::kLocked);
  EXPECT_EQ(second.error().message(), conflict("Failed to get \"write\" lock", qcow2_));
  auto reader = open(qcow2_, true);
  ASSERT_FALSE(reader);
  EXPECT_EQ(reader.error().message(), conflict("Failed to get shared \"write\" lock", qcow2_));
  // The failed opens gave back every byte they had taken: only the writer's remain.
  EXPECT_EQ(held_lock_bytes(qcow2_), (V{100, 101, 103, 201, 203}));
  auto shared = open(qcow2_, true, true);
  EXPECT_TRUE(shared) << shared.error().to_string();
  close(*shared);
  close(*writer);
  auto again = open(qcow2_, false);
  EXPECT_TRUE(again) << again.error().to_string();
}

TEST_F(ImageLockTest, ReadersShareAndKeepWritersOff) {
  auto r1 = open(qcow2_, true);
  auto r2 = open(qcow2_, true);
  ASSERT_TRUE(r1);
  ASSERT_TRUE(r2);
  auto w = open(qcow2_, false);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().message(), conflict("Failed to get \"write\" lock", qcow2_));
  // A raw writer forbids nothing, as QEMU's: qemu-img info of a raw disk a VM runs on works.
  auto rw = open(raw_, false);
  ASSERT_TRUE(rw);
  auto rr = open(raw_, true);
  EXPECT_TRUE(rr);
}

TEST_F(ImageLockTest, ForceShareIsForReadOnlyOpens) {
  auto d = open(qcow2_, false, true);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().message(), "force-share=on can only be used with read-only images");
  EXPECT_EQ(held_lock_bytes(qcow2_), V{});
}

TEST_F(ImageLockTest, BackingFileIsLockedReadOnly) {
  std::string top = dir_.file("top.qcow2");
  Qcow2CreateOptions o;
  o.backing_file = "disk.qcow2";
  o.backing_format = "qcow2";
  ASSERT_TRUE(loop_->run(create_image(*loop_, top, "qcow2", 1 << 20, o)));
  auto d = open(top, false);
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_EQ(held_lock_bytes(top), (V{100, 101, 103, 201, 203}));
  EXPECT_EQ(held_lock_bytes(qcow2_), (V{100, 201, 203}));
  auto base_writer = open(qcow2_, false);
  EXPECT_FALSE(base_writer);
}

TEST_F(ImageLockTest, CreateRefusesAnImageInUseAndLeavesItIntact) {
  auto d = open(qcow2_, false);
  ASSERT_TRUE(d);
  uint8_t buf[512];
  std::memset(buf, 0xab, sizeof buf);
  ASSERT_TRUE(loop_->run((*d)->write(0, buf, sizeof buf)));
  ASSERT_TRUE(loop_->run((*d)->flush()));
  auto size_before = std::filesystem::file_size(qcow2_);
  auto st = loop_->run(create_image(*loop_, qcow2_, "raw", 4096, {}));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().message(), conflict("Failed to get \"write\" lock", qcow2_));
  EXPECT_EQ(std::filesystem::file_size(qcow2_), size_before);
  uint8_t back[512] = {};
  ASSERT_TRUE(loop_->run((*d)->read(0, back, sizeof back)));
  EXPECT_EQ(std::memcmp(buf, back, sizeof buf), 0);
}

// A file system without lock support: fcntl fails with ENOTSUP (NFS without lockd says
// ENOLCK). QEMU 7.2 fails the open, naming the byte and the OS's reason; so do we, after
// giving back the bytes already taken.
std::map<int64_t, bool> g_fake_locks;
int g_fail_at_set = -1;  // the number of the set call that fails, -1 none
int g_sets = 0;
int fake_set(int, int64_t byte, bool lock) {
  if (g_sets++ == g_fail_at_set) return ENOTSUP;
  if (lock) {
    g_fake_locks[byte] = true;
  } else {
    g_fake_locks.erase(byte);
  }
  return 0;
}
int fake_test(int, int64_t, bool* held) {
  *held = false;
  return 0;
}
int failing_test(int, int64_t, bool*) { return ENOLCK; }

TEST(ImageLockFault, LockFailureNamesTheByteAndGivesBackTheRest) {
  const LockSyscalls sys{fake_set, fake_test};
  for (int fail_at : {0, 3}) {
    SCOPED_TRACE(fail_at);
    g_fake_locks.clear();
    g_sets = 0;
    g_fail_at_set = fail_at;
    ImageLock lock(sys);
    auto s = lock.acquire(-1, "x.qcow2", kPermConsistentRead | kPermWrite | kPermResize,
                          kPermAll & ~(kPermWrite | kPermResize));
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code(), ErrorCode::kIo);
    // Bytes in order 100, 101, 103, 201, 203: the 4th set is byte 201.
    EXPECT_EQ(s.error().message(),
              std::string(fail_at == 0 ? "Failed to lock byte 100" : "Failed to lock byte 201") +
                  ": " + std::strerror(ENOTSUP));
    EXPECT_TRUE(g_fake_locks.empty());
    EXPECT_EQ(lock.perm(), 0u);
    EXPECT_EQ(lock.unshared(), 0u);
  }
  g_fail_at_set = -1;
}

TEST(ImageLockFault, ProbeFailureIsAnErrorNotAGrant) {
  g_fake_locks.clear();
  g_sets = 0;
  const LockSyscalls sys{fake_set, failing_test};
  ImageLock lock(sys);
  auto s = lock.acquire(-1, "x.raw", kPermConsistentRead, kPermAll);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message(), std::string("Failed to get \"consistent read\" lock: ") +
                                     std::strerror(ENOLCK) +
                                     "\nIs another process using the image [x.raw]?");
  EXPECT_TRUE(g_fake_locks.empty());
}

// Side by side with the real peers: qemu-io holds the bytes we hold, keeps us off, and
// qemu-img is kept off by us, each in qemu's words.
TEST_F(ImageLockTest, LockInteropWithQemu) {
  SKIP_WITHOUT_QEMU_TOOLS();
  struct Case {
    std::string path;
    std::vector<std::string> flags;
    bool ro, share;
  };
  for (const Case& c : std::vector<Case>{{qcow2_, {"-f", "qcow2"}, false, false},
                                         {qcow2_, {"-f", "qcow2", "-r"}, true, false},
                                         {qcow2_, {"-f", "qcow2", "-r", "-U"}, true, true},
                                         {raw_, {"-f", "raw"}, false, false},
                                         {raw_, {"-f", "raw", "-r"}, true, false}}) {
    SCOPED_TRACE(c.path + (c.ro ? " ro" : " rw") + (c.share ? " -U" : ""));
    V theirs;
    {
      test::QemuIoHolder q(c.path, c.flags);
      ASSERT_TRUE(q.ready()) << "qemu-io did not open " << c.path;
      theirs = held_lock_bytes(c.path);
    }
    auto d = open(c.path, c.ro, c.share);
    ASSERT_TRUE(d);
    EXPECT_EQ(held_lock_bytes(c.path), theirs);
  }
}

TEST_F(ImageLockTest, QemuIoWriterKeepsLibimgOff) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::QemuIoHolder q(qcow2_, {"-f", "qcow2"});
  ASSERT_TRUE(q.ready());
  auto w = open(qcow2_, false);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().message(), conflict("Failed to get \"write\" lock", qcow2_));
  auto r = open(qcow2_, true);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), conflict("Failed to get shared \"write\" lock", qcow2_));
  auto shared = open(qcow2_, true, true);
  EXPECT_TRUE(shared);
}

TEST_F(ImageLockTest, LibimgWriterKeepsQemuImgOff) {
  SKIP_WITHOUT_QEMU_TOOLS();
  auto d = open(qcow2_, false);
  ASSERT_TRUE(d);
  std::string q = test::shell_quote(qcow2_);
  auto info = test::run_tool("qemu-img info -f qcow2 " + q);
  EXPECT_EQ(info.exit_code, 1);
  EXPECT_EQ(info.output, "qemu-img: Could not open '" + qcow2_ + "': " +
                             conflict("Failed to get shared \"write\" lock", qcow2_) + "\n");
  auto write = test::run_tool("qemu-io -f qcow2 -c 'write 0 512' " + q);
  EXPECT_NE(write.output.find("Failed to get \"write\" lock"), std::string::npos) << write.output;
  auto shared = test::run_tool("qemu-img info -U -f qcow2 " + q);
  EXPECT_EQ(shared.exit_code, 0) << shared.output;
  close(*d);
  auto after = test::run_tool("qemu-img info -f qcow2 " + q);
  EXPECT_EQ(after.exit_code, 0) << after.output;
}

}  // namespace
}  // namespace img
