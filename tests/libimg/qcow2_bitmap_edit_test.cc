// edit_bitmap (qemu-img bitmap --add/--remove/--clear/--enable/--disable) in memory: what each
// operation leaves in the directory, the errors in QEMU's words, no leaks afterwards, and crash
// safety: the file fails from every mutating operation of an edit in turn, the machine crashes
// (unflushed writes dropped, or a random subset kept), and the image opens with either the old
// bitmaps or the new ones, check finding no corruption (leaks at worst) and the guest data intact.
#include <random>

#include "img/qcow2.h"
#include "qcow2_test_util.h"

namespace img {
namespace {

constexpr uint64_t kSize = 8ull << 20;

std::vector<BitmapInfo> bitmaps_of(IoLoop& loop, test::MemImage& m) {
  auto i = loop.run(read_qcow2_info(m.fault_file()));
  EXPECT_TRUE(i.has_value()) << i.error().to_string();
  return i ? i->bitmaps : std::vector<BitmapInfo>{};
}

std::string names(const std::vector<BitmapInfo>& b) {
  std::string s;
  for (const auto& x : b) {
    s += x.name + "/" + std::to_string(x.granularity) + (x.auto_ ? "/auto" : "") +
         (x.in_use ? "/in-use" : "") + ";";
  }
  return s;
}

Status edit(IoLoop& loop, test::MemImage& m, const std::string& name, BitmapEdit::Op op,
            uint64_t gran = 0) {
  return loop.run(edit_bitmap(*m.drv, name, {.op = op, .granularity = gran}));
}

std::vector<uint8_t> guest_data() {
  std::vector<uint8_t> v(kSize);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 7 + i / 4096);
  return v;
}

TEST(BitmapEdit, EachOperationAsQemuImgLeavesIt) {
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = kSize});
  ASSERT_OK(edit(*loop, m, "b0", BitmapEdit::Op::kAdd));
  ASSERT_OK(edit(*loop, m, "b1", BitmapEdit::Op::kAdd, 4096));
  ASSERT_OK(edit(*loop, m, "b1", BitmapEdit::Op::kDisable));
  // Default granularity: the cluster size (at least 4 KiB), as QEMU picks it.
  EXPECT_EQ(names(bitmaps_of(*loop, m)), "b0/65536/auto;b1/4096;");
  ASSERT_OK(edit(*loop, m, "b1", BitmapEdit::Op::kEnable));
  ASSERT_OK(edit(*loop, m, "b0", BitmapEdit::Op::kClear));
  EXPECT_EQ(names(bitmaps_of(*loop, m)), "b0/65536/auto;b1/4096/auto;");
  m.close();
  test::expect_clean(*loop, m);
  m.reopen();
  // A guest write marks them in use (libimg does not update bitmaps); then only remove works.
  auto data = guest_data();
  ASSERT_OK(loop->run(m.drv->write(0, data.data(), data.size())));
  EXPECT_EQ(names(bitmaps_of(*loop, m)), "b0/65536/auto/in-use;b1/4096/auto/in-use;");
  for (auto op : {BitmapEdit::Op::kClear, BitmapEdit::Op::kEnable, BitmapEdit::Op::kDisable}) {
    Status s = edit(*loop, m, "b0", op);
    ASSERT_FALSE(s.has_value());
    EXPECT_EQ(s.error().message(),
              "Bitmap 'b0' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to "
              "delete this bitmap from disk");
  }
  ASSERT_OK(edit(*loop, m, "b0", BitmapEdit::Op::kRemove));
  ASSERT_OK(edit(*loop, m, "b1", BitmapEdit::Op::kRemove));
  EXPECT_TRUE(bitmaps_of(*loop, m).empty());
  m.close();
  test::expect_clean(*loop, m);
  // The last bitmap gone, so is the extension and its autoclear bit.
  auto i = loop->run(read_qcow2_info(m.fault_file()));
  ASSERT_TRUE(i.has_value());
  EXPECT_TRUE(i->bitmaps.empty());
  EXPECT_EQ(m.file_bytes()[95] & 1, 0);  // autoclear bit 0, the low byte of the field at 88
}

TEST(BitmapEdit, ErrorsInQemusWords) {
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = kSize});
  ASSERT_OK(edit(*loop, m, "b0", BitmapEdit::Op::kAdd));
  auto expect_error = [&](const std::string& name, BitmapEdit::Op op, uint64_t gran,
                          const std::string& want) {
    Status s = edit(*loop, m, name, op, gran);
    ASSERT_FALSE(s.has_value()) << name;
    EXPECT_EQ(s.error().message(), want);
  };
  expect_error("b0", BitmapEdit::Op::kAdd, 0, "Bitmap already exists: b0");
  expect_error("nope", BitmapEdit::Op::kRemove, 0, "Dirty bitmap 'nope' not found");
  expect_error("nope", BitmapEdit::Op::kClear, 0, "Dirty bitmap 'nope' not found");
  expect_error("b1", BitmapEdit::Op::kAdd, 1000, "Granularity must be power of 2 and at least 512");
  expect_error("b1", BitmapEdit::Op::kAdd, 256, "Granularity must be power of 2 and at least 512");
  test::MemImage v2(*loop, {.size = kSize, .version = 2});
  Status s = edit(*loop, v2, "x", BitmapEdit::Op::kAdd);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("Cannot store dirty bitmaps in qcow2 v2 files"),
            std::string::npos);
  m.close();
  test::expect_clean(*loop, m);
}

struct CrashCase {
  const char* name;
  BitmapEdit::Op op;
  const char* bitmap;
  const char* before;  // the bitmaps before the edit and after it, as names() shows them
  const char* after;
};

// b0 (enabled) and b1 (4 KiB, disabled) on an image with guest data.
void prepare(IoLoop& loop, test::MemImage& m) {
  auto data = guest_data();
  ASSERT_OK(loop.run(m.drv->write(0, data.data(), data.size())));
  ASSERT_OK(edit(loop, m, "b0", BitmapEdit::Op::kAdd));
  ASSERT_OK(edit(loop, m, "b1", BitmapEdit::Op::kAdd, 4096));
  ASSERT_OK(edit(loop, m, "b1", BitmapEdit::Op::kDisable));
  ASSERT_OK(loop.run(m.drv->flush()));
}

void cut_at(const CrashCase& c, uint64_t k, bool keep_random, uint64_t seed) {
  SCOPED_TRACE(std::string(c.name) + ": fails from op " + std::to_string(k) +
               (keep_random ? ", random subset of unflushed writes kept" : ", unflushed dropped"));
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = kSize});
  ASSERT_NO_FATAL_FAILURE(prepare(*loop, m));
  m.fault_file().fail_from_op(k);
  Status s = edit(*loop, m, c.bitmap, c.op);
  if (!s) {
    EXPECT_EQ(s.error().code(), ErrorCode::kIo) << s.error().to_string();
  }
  m.fault_file().stop_failing();
  if (keep_random) {
    std::mt19937_64 rng(seed);
    m.fault_file().crash_keep_random_subset(rng);
  } else {
    m.fault_file().crash_drop_unflushed();
  }
  m.abandon();
  const std::string got = names(bitmaps_of(*loop, m));
  EXPECT_TRUE(got == c.before || got == c.after) << got;
  test::expect_clean(*loop, m, /*allow_leaks=*/true);
  ASSERT_OK(m.open({}));
  std::vector<uint8_t> back(kSize);
  ASSERT_OK(loop->run(m.drv->read(0, back.data(), back.size())));
  EXPECT_TRUE(back == guest_data());
  m.close();
}

uint64_t ops_of(const CrashCase& c) {
  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = kSize});
  prepare(*loop, m);
  uint64_t before = m.fault_file().mutating_ops_seen();
  EXPECT_OK(edit(*loop, m, c.bitmap, c.op));
  EXPECT_EQ(names(bitmaps_of(*loop, m)), c.after);
  m.close();
  test::expect_clean(*loop, m);  // no leak after a clean edit
  return m.fault_file().mutating_ops_seen() - before;
}

class BitmapEditCrash : public ::testing::TestWithParam<CrashCase> {};

TEST_P(BitmapEditCrash, EveryCutPoint) {
  const CrashCase& c = GetParam();
  const uint64_t n = ops_of(c);
  ASSERT_GT(n, 2u);
  for (uint64_t k = 0; k <= n; ++k) {
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, false, 0));
    ASSERT_NO_FATAL_FAILURE(cut_at(c, k, true, k * 17 + 3));
  }
}

constexpr const char* kBefore = "b0/65536/auto;b1/4096;";
INSTANTIATE_TEST_SUITE_P(
    Cases, BitmapEditCrash,
    ::testing::Values(CrashCase{"add", BitmapEdit::Op::kAdd, "b2", kBefore,
                                "b0/65536/auto;b1/4096;b2/65536/auto;"},
                      CrashCase{"remove", BitmapEdit::Op::kRemove, "b0", kBefore, "b1/4096;"},
                      CrashCase{"clear", BitmapEdit::Op::kClear, "b1", kBefore, kBefore},
                      CrashCase{"enable", BitmapEdit::Op::kEnable, "b1", kBefore,
                                "b0/65536/auto;b1/4096/auto;"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
