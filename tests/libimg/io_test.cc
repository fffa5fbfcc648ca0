#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "img/file.h"
#include "img/image.h"
#include "img/mem_file.h"
#include "img/qcow2.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::TempDir;

Task<int> add_after_yield(IoLoop& loop, int a, int b) {
  co_await loop.yield();
  co_return a + b;
}

Task<int> nested(IoLoop& loop) {
  int s = 0;
  for (int i = 0; i < 10000; ++i) s += co_await add_after_yield(loop, i, 1);
  co_return s;
}

TEST(IoLoop, RunsNestedCoroutinesToCompletion) {
  auto loop = make_loop();
  EXPECT_EQ(loop->run(nested(*loop)), 10000 * 9999 / 2 + 10000);
}

TEST(IoLoop, SpawnedTasksInterleave) {
  auto loop = make_loop();
  std::vector<int> order;
  auto worker = [&](int id) -> Task<void> {
    for (int i = 0; i < 3; ++i) {
      order.push_back(id);
      co_await loop->yield();
    }
  };
  loop->spawn(worker(1));
  loop->spawn(worker(2));
  loop->drain();
  EXPECT_EQ(order, (std::vector<int>{1, 2, 1, 2, 1, 2}));
}

TEST(HostFile, WriteReadFlushThroughUring) {
  auto loop = make_loop();
  TempDir dir;
  auto f = open_host_file(*loop, dir.file("a"), {.create = true});
  ASSERT_OK(f);
  File& file = **f;
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  ASSERT_OK(loop->run(file.write(4096, data.data(), data.size())));
  ASSERT_OK(loop->run(file.flush()));
  EXPECT_EQ(*file.size(), 4096 + data.size());
  std::vector<uint8_t> back(data.size() + 1000, 0xff);
  auto got = loop->run(file.read(4096, back.data(), back.size()));
  ASSERT_OK(got);
  EXPECT_EQ(*got, data.size());  // short: the rest is past EOF
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), data.size()));
  for (size_t i = data.size(); i < back.size(); ++i) ASSERT_EQ(back[i], 0) << i;
  // Punched holes read as zeros and keep the size.
  ASSERT_OK(loop->run(file.discard(4096, 8192)));
  std::vector<uint8_t> z(8192, 1);
  ASSERT_OK(loop->run(file.read(4096, z.data(), z.size())));
  EXPECT_EQ(std::vector<uint8_t>(8192, 0), z);
  EXPECT_EQ(*file.size(), 4096 + data.size());
}

TEST(HostFile, MissingFileNamesThePath) {
  auto loop = make_loop();
  auto f = open_host_file(*loop, "/nonexistent/dir/x.img", {});
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(f.error().message().find("/nonexistent/dir/x.img"), std::string::npos);
}

TEST(FaultFile, CrashDropsUnflushedWrites) {
  auto loop = make_loop();
  FaultFile f;
  uint8_t a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
  ASSERT_OK(loop->run(f.write(0, a, 4)));
  ASSERT_OK(loop->run(f.flush()));
  ASSERT_OK(loop->run(f.write(0, b, 4)));
  ASSERT_OK(loop->run(f.write(8, b, 4)));
  EXPECT_EQ(f.unflushed_ops(), 2u);
  f.crash_drop_unflushed();
  EXPECT_EQ(f.bytes(), (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST(FaultFile, InjectedFailureFailsTheWriteAndLaterFlush) {
  auto loop = make_loop();
  FaultFile f;
  uint8_t a[4] = {1, 2, 3, 4};
  f.fail_from_op(1);
  ASSERT_OK(loop->run(f.write(0, a, 4)));
  auto r = loop->run(f.write(4, a, 4));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_FALSE(loop->run(f.flush()));
}

TEST(RawDriver, ReadsWritesAndRefusesOutOfRange) {
  auto loop = make_loop();
  auto mf = std::make_unique<MemFile>();
  mf->bytes().resize(1 << 20);
  auto drv = loop->run(open_image_file(*loop, std::move(mf), {.format = "raw"}));
  ASSERT_OK(drv);
  BlockDriver& d = **drv;
  EXPECT_EQ(d.size(), 1u << 20);
  std::vector<uint8_t> buf(1000, 0xab), back(1000);
  ASSERT_OK(loop->run(d.write(12345, buf.data(), buf.size())));
  ASSERT_OK(loop->run(d.read(12345, back.data(), back.size())));
  EXPECT_EQ(buf, back);
  auto r = loop->run(d.write((1 << 20) - 10, buf.data(), buf.size()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace img

namespace img {
namespace {

// O_DIRECT files take unaligned buffers, offsets and lengths (through a bounce buffer), and a
// write near the end does not grow the file past what was written.
TEST(HostFile, DirectIoAcceptsUnalignedRequests) {
  auto loop = test::make_loop();
  test::TempDir dir;
  std::string path = dir.file("d");
  {
    auto f = open_host_file(*loop, path, {.create = true});
    ASSERT_OK(f);
    ASSERT_OK(loop->run((*f)->truncate(10000)));
  }
  auto f = open_host_file(*loop, path, {.direct = true});
  if (!f && f.error().sys_errno() == EINVAL) GTEST_SKIP() << "file system has no O_DIRECT";
  ASSERT_OK(f);
  File& file = **f;
  std::vector<uint8_t> data(3001);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 3 + 1);
  ASSERT_OK(loop->run(file.write(6999, data.data(), data.size())));
  EXPECT_EQ(*file.size(), 10000u);
  std::vector<uint8_t> back(3001);
  auto got = loop->run(file.read(6999, back.data(), back.size()));
  ASSERT_OK(got);
  EXPECT_EQ(*got, 3001u);
  EXPECT_EQ(back, data);
  uint8_t tail[8];
  ASSERT_OK(loop->run(file.write(9998, tail, 8)));  // grows the file to 10006 exactly
  EXPECT_EQ(*file.size(), 10006u);
}

TEST(Qcow2Driver, OpensAndWritesWithDirectIo) {
  auto loop = test::make_loop();
  test::TempDir dir;
  std::string path = dir.file("d.qcow2");
  {
    auto f = open_host_file(*loop, path, {.create = true});
    ASSERT_OK(f);
    ASSERT_OK(loop->run(create_qcow2(**f, {.size = 8 << 20, .cluster_size = 65536})));
  }
  auto d = loop->run(open_image(*loop, path, {.direct = true}));
  ASSERT_OK(d);
  std::vector<uint8_t> data(100000, 0x42);
  ASSERT_OK(loop->run((*d)->write(777, data.data(), data.size())));
  std::vector<uint8_t> back(data.size());
  ASSERT_OK(loop->run((*d)->read(777, back.data(), back.size())));
  EXPECT_EQ(back, data);
  ASSERT_OK(loop->run((*d)->close()));
  auto f = open_host_file(*loop, path, {});
  ASSERT_OK(f);
  auto r = loop->run(check_qcow2(**f, RepairMode::kNone));
  ASSERT_OK(r);
  EXPECT_EQ(r->corruptions + r->leaks, 0u);
}

}  // namespace
}  // namespace img
