// O_DIRECT host files under concurrency: unaligned requests bounce through aligned buffers with a
// read-modify-write of their edge blocks, and none of that may lose a concurrent write.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "img/file.h"
#include "io/dio_align.h"
#include "io/host_file.h"
#include "test_util.h"

namespace img {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBuf aligned_buf(size_t n, uint8_t fill) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
  std::memset(p, fill, n);
  return AlignedBuf(p);
}

// The file's bytes as the kernel has them, read without the code under test.
std::vector<uint8_t> file_bytes(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::vector<uint8_t> out;
  if (fd < 0) return out;
  off_t size = ::lseek(fd, 0, SEEK_END);
  out.resize(size);
  ssize_t r = ::pread(fd, out.data(), out.size(), 0);
  ::close(fd);
  if (r != size) out.clear();
  return out;
}

class DirectFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_ = test::make_loop();
    path_ = dir_.file("direct");
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    align_ = query_dio_align(fd);
    ::close(fd);
    auto f = open_host_file(*loop_, path_, {.direct = true});
    if (!f && f.error().sys_errno() == EINVAL) {
      GTEST_SKIP() << "the file system under " << dir_.path() << " refuses O_DIRECT";
    }
    ASSERT_OK(f);
    file_ = std::move(*f);
    // Requests are built from 4096-byte blocks: aligned for any file system's O_DIRECT rules.
    ASSERT_LE(align_.offset, kBlock);
    ASSERT_LE(align_.mem, kBlock);
  }

  // Starts a write of len bytes of value v at off; the buffer is aligned (so the request takes
  // the fast path) when off and len are.
  void spawn_write(uint64_t off, uint64_t len, uint8_t v) {
    bufs_.push_back(aligned_buf(len + 1, v));
    uint8_t* p = bufs_.back().get();
    loop_->spawn([](File& f, uint64_t off, uint8_t* p, uint64_t len,
                    std::vector<std::string>* errors) -> Task<void> {
      Status s = co_await f.write(off, p, len);
      if (!s)
        errors->push_back(
            strfmt("write %llu+%llu: ", (unsigned long long)off, (unsigned long long)len) +
            s.error().to_string());
    }(*file_, off, p, len, &errors_));
  }

  static constexpr uint64_t kBlock = 4096;
  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_;
  std::string path_;
  DioAlign align_;
  std::unique_ptr<File> file_;
  std::vector<AlignedBuf> bufs_;
  std::vector<std::string> errors_;  // of failed writes
};

// Bug: a bounced write that ended in a partial block past EOF wrote the whole block, then
// truncated the file back to the size it had seen before it started, cutting off an aligned write
// that extended the file in the meantime.
TEST_F(DirectFileTest, BounceWriteDoesNotTruncateAConcurrentExtension) {
  for (uint64_t round = 0; round < 16; ++round) {
    uint64_t eof = round * 4 * kBlock + 1000;
    ASSERT_OK(loop_->run(file_->truncate(eof)));
    spawn_write(eof, 8, 0x11);  // grows the file by 8 bytes, through a bounce
    spawn_write(eof + 3 * kBlock - 1000, kBlock, 0x22);  // aligned, further out
    loop_->drain();
    ASSERT_EQ(errors_, std::vector<std::string>{});
    std::vector<uint8_t> got = file_bytes(path_);
    uint64_t want_size = eof + 4 * kBlock - 1000;
    ASSERT_EQ(got.size(), want_size) << "round " << round;
    for (uint64_t i = want_size - kBlock; i < want_size; ++i) {
      ASSERT_EQ(got[i], 0x22) << "round " << round << " byte " << i;
    }
    for (uint64_t i = eof; i < eof + 8; ++i) ASSERT_EQ(got[i], 0x11) << "round " << round;
  }
}

// Bug: the read-modify-write of an unaligned write read its edge block, a concurrent aligned write
// replaced that block, and the bounce then wrote the stale block back over it.
TEST_F(DirectFileTest, BounceRmwDoesNotUndoAConcurrentAlignedWrite) {
  ASSERT_OK(loop_->run(file_->truncate(64 * kBlock)));
  for (uint64_t round = 0; round < 32; ++round) {
    uint64_t block = (round % 64) * kBlock;
    uint8_t v = static_cast<uint8_t>(2 * round + 1);
    spawn_write(block + 100, 10, v);             // unaligned: read-modify-write of this block
    spawn_write(block, kBlock, uint8_t(v + 1));  // aligned: the whole block
    loop_->drain();
    ASSERT_EQ(errors_, std::vector<std::string>{});
    std::vector<uint8_t> got = file_bytes(path_);
    ASSERT_EQ(got.size(), 64 * kBlock);
    // Either order is a valid outcome; a byte outside the small write holding anything but the
    // aligned write's value is the lost update.
    for (uint64_t i = 0; i < kBlock; ++i) {
      uint8_t b = got[block + i];
      bool in_small = i >= 100 && i < 110;
      if (in_small) {
        ASSERT_TRUE(b == v || b == uint8_t(v + 1)) << "round " << round << " byte " << i;
      } else {
        ASSERT_EQ(b, uint8_t(v + 1)) << "round " << round << " byte " << i;
      }
    }
  }
}

// Rounds of 24+ concurrent writes: aligned ones, unaligned ones sharing their blocks, and writes
// that extend the file both ways. Every byte must end up holding a value that one of the writes
// covering it wrote (or its old value if none did), and the size must be the furthest end.
TEST_F(DirectFileTest, ConcurrentMixedWritesMatchModel) {
  std::mt19937_64 rng(20261231);
  auto below = [&](uint64_t n) { return rng() % n; };
  std::vector<uint8_t> model;  // the file after the previous round
  constexpr int kRounds = 10, kPerRound = 24;
  for (int round = 0; round < kRounds; ++round) {
    struct W {
      uint64_t off, len;
      uint8_t v;
    };
    std::vector<W> ws;
    uint64_t end = model.size();
    auto add = [&](uint64_t off, uint64_t len) {
      ws.push_back({off, len, static_cast<uint8_t>(1 + round * kPerRound + ws.size())});
      end = std::max(end, off + len);
    };
    const uint64_t region = std::max<uint64_t>(model.size(), 8 * kBlock);
    while (ws.size() < kPerRound) {
      switch (below(5)) {
        case 0: {  // an unaligned write and an aligned one over the same block
          uint64_t blk = below(region / kBlock) * kBlock;
          add(blk + below(kBlock - 64), 1 + below(63));
          add(blk, kBlock);
          break;
        }
        case 1: {  // an unaligned extension, then an aligned write beyond it
          uint64_t off = end + below(3 * kBlock);
          add(off, 1 + below(2 * kBlock));
          add((end / kBlock + 1 + below(3)) * kBlock, kBlock * (1 + below(2)));
          break;
        }
        case 2:  // unaligned, anywhere, possibly spanning blocks
          add(below(region), 1 + below(3 * kBlock));
          break;
        case 3:  // aligned, anywhere
          add(below(region / kBlock) * kBlock, kBlock * (1 + below(3)));
          break;
        default:  // unaligned extension only
          add(end + below(100), 1 + below(kBlock));
          break;
      }
    }
    for (const W& w : ws) spawn_write(w.off, w.len, w.v);
    loop_->drain();
    ASSERT_EQ(errors_, std::vector<std::string>{});
    bufs_.clear();

    std::vector<uint8_t> got = file_bytes(path_);
    ASSERT_EQ(got.size(), end) << "round " << round;
    int bad = 0;
    for (uint64_t i = 0; i < end && bad < 5; ++i) {
      bool covered = false, ok = false;
      for (const W& w : ws) {
        if (i >= w.off && i < w.off + w.len) {
          covered = true;
          ok = ok || got[i] == w.v;
        }
      }
      uint8_t old = i < model.size() ? model[i] : 0;
      if (!covered) ok = got[i] == old;
      if (!ok) {
        ++bad;
        ADD_FAILURE() << "round " << round << ": byte " << i << " holds " << int(got[i])
                      << (covered ? ", which no write covering it wrote" : ", was ")
                      << (covered ? "" : std::to_string(old));
      }
    }
    ASSERT_EQ(bad, 0);
    model = std::move(got);
  }
}

}  // namespace
}  // namespace img

namespace img {
namespace {

// Bug: a request bounced whole, so a hostile guest's 256 MiB unaligned write allocated 256 MiB.
TEST_F(DirectFileTest, HugeUnalignedWriteBouncesInBoundedChunks) {
  constexpr uint64_t kLen = 256ull << 20;
  std::vector<uint8_t> data(kLen + 1);
  for (uint64_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i ^ (i >> 9) ^ (i >> 17));
  HostFile::reset_largest_bounce_alloc();
  // Offset and buffer both unaligned: every byte bounces.
  ASSERT_OK(loop_->run(file_->write(1, data.data() + 1, kLen)));
  EXPECT_LE(HostFile::largest_bounce_alloc(), HostFile::kMaxBounceBytes);
  EXPECT_GT(HostFile::largest_bounce_alloc(), 0u);
  EXPECT_EQ(*file_->size(), kLen + 1);

  HostFile::reset_largest_bounce_alloc();
  std::vector<uint8_t> back(kLen + 2);
  auto got = loop_->run(file_->read(3, back.data() + 1, kLen + 1));  // one byte past EOF
  ASSERT_OK(got);
  EXPECT_EQ(*got, kLen - 2);
  EXPECT_LE(HostFile::largest_bounce_alloc(), HostFile::kMaxBounceBytes);
  EXPECT_EQ(0, std::memcmp(back.data() + 1, data.data() + 3, kLen - 2));
  for (uint64_t i = kLen - 1; i < kLen + 2; ++i) EXPECT_EQ(back[i], 0) << i;
}

// A write bounced in several chunks that ends in a partial block past EOF grows the file to its
// end exactly, and the chunks join up.
TEST_F(DirectFileTest, MultiChunkWritePastEofEndsExactlyAtItsEnd) {
  const uint64_t len = 3 * HostFile::kMaxBounceBytes + 777;
  std::vector<uint8_t> data(len);
  for (uint64_t i = 0; i < len; ++i) data[i] = static_cast<uint8_t>(i * 13 + 5);
  ASSERT_OK(loop_->run(file_->truncate(5000)));
  ASSERT_OK(loop_->run(file_->write(4999, data.data(), len)));
  std::vector<uint8_t> got = file_bytes(path_);
  ASSERT_EQ(got.size(), 4999 + len);
  EXPECT_EQ(0, std::memcmp(got.data() + 4999, data.data(), len));
  for (uint64_t i = 0; i < 4999; ++i) ASSERT_EQ(got[i], 0) << i;
}

}  // namespace
}  // namespace img
