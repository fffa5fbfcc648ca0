// The other way round from qcow2_chain_interop_test: chains that libimg creates (create_qcow2
// with a backing file named relative to the overlay) and fills through its own chain (writes,
// write_zeroes, discards into every layer over the layers below) are read by qemu-img exactly
// as libimg reads them, pass qemu-img check, show the backing name and format qemu-img info
// expects, agree with qemu-img map, and take qemu-io's writes into the top afterwards.
#include <random>

#include "chain_interop.h"
#include "img/qcow2.h"

namespace img {
namespace {

using test::LayerSpec;
using test::shell_quote;

struct MadeCase {
  const char* name;
  std::vector<LayerSpec> layers;  // base first
};

constexpr uint64_t kK = 1024, kM = 1024 * 1024;

std::vector<MadeCase> made_cases() {
  return {
      {"RawBaseV3", {{"base.raw", "raw", 2 * kM + 512}, {"o/top.qcow2", "qcow2", 3 * kM}}},
      {"V2OverV3Shorter",
       {{"a/base.qcow2", "qcow2", 3 * kM, 12},
        {"b/mid.qcow2", "qcow2", 1 * kM + 1536, 16, "0.10"},
        {"top.qcow2", "qcow2", 4 * kM, 9}}},
      {"TwoMiBOverHalfKiB",
       {{"base.qcow2", "qcow2", 1 * kM, 9},
        {"mid.qcow2", "qcow2", 5 * kM, 21},
        {"x/y/top.qcow2", "qcow2", 4 * kM + 512, 21, "0.10"}}},
  };
}

class LibimgMadeChain : public ::testing::TestWithParam<MadeCase> {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }
  std::string path(size_t i) const { return dir_.file(GetParam().layers[i].path); }
  std::string scratch() const { return dir_.file("scratch.raw"); }

  void create_layer(size_t i) {
    const LayerSpec& l = GetParam().layers[i];
    std::filesystem::create_directories(std::filesystem::path(path(i)).parent_path());
    auto f = open_host_file(*loop_, path(i), {.create = true, .truncate = true});
    ASSERT_TRUE(f.has_value()) << f.error().to_string();
    if (l.fmt == "raw") {
      ASSERT_OK(loop_->run((*f)->truncate(l.size)));
    } else {
      Qcow2CreateOptions o{.size = l.size,
                           .version = l.compat == "0.10" ? 2 : 3,
                           .cluster_size = 1u << l.cluster_bits};
      if (i > 0) {
        o.backing_file =
            std::filesystem::relative(path(i - 1), std::filesystem::path(path(i)).parent_path());
        o.backing_format = GetParam().layers[i - 1].fmt;
      }
      ASSERT_OK(loop_->run(create_qcow2(**f, o)));
    }
    ASSERT_OK(loop_->run((*f)->flush()));
  }

  // Random writes, zeroes and discards through libimg into layer i (over its chain).
  void fill_layer(size_t i, std::mt19937_64& rng) {
    auto d = loop_->run(open_image(*loop_, path(i), {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    const uint64_t size = (*d)->size();
    for (int k = 0; k < 25; ++k) {
      uint64_t off = rng() % size;
      uint64_t len = std::min<uint64_t>(size - off, 1 + rng() % (600 * kK));
      int kind = static_cast<int>(rng() % 8);
      Status s;
      if (kind < 5) {
        std::vector<uint8_t> buf(len, static_cast<uint8_t>(0x20 + 0x40 * i + k));
        s = loop_->run((*d)->write(off, buf.data(), len));
      } else if (kind < 7) {
        s = loop_->run((*d)->write_zeroes(off, len, {.may_unmap = kind == 6}));
      } else {
        s = loop_->run((*d)->discard(off, len));
      }
      ASSERT_TRUE(s.has_value()) << s.error().to_string();
    }
    ASSERT_OK(loop_->run((*d)->close()));
  }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_P(LibimgMadeChain, QemuReadsChecksAndWritesIt) {
  const auto& layers = GetParam().layers;
  std::mt19937_64 rng(std::hash<std::string>{}(GetParam().name));
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(path(i));
    create_layer(i);
    fill_layer(i, rng);
    ASSERT_FALSE(HasFailure());
    EXPECT_SAME_BYTES(test::qemu_flat(path(i), scratch()), test::libimg_flat(*loop_, path(i)),
                      "qemu-img convert of " + path(i));
    if (layers[i].fmt == "raw") continue;
    test::expect_qemu_check_clean(path(i));
    if (i > 0) {
      std::string info = test::qemu_ok("qemu-img info --output=json " + shell_quote(path(i)));
      std::string rel =
          std::filesystem::relative(path(i - 1), std::filesystem::path(path(i)).parent_path());
      EXPECT_EQ(test::json_field(info, "backing-filename"), rel) << info;
      EXPECT_EQ(test::json_field(info, "backing-filename-format"), layers[i - 1].fmt) << info;
    }
  }
  const std::string top = path(layers.size() - 1);
  test::expect_map_agrees_with_qemu(*loop_, top);
  // qemu-io writes into libimg's top; libimg reads what qemu-img reads, and it stays clean.
  const LayerSpec& t = layers.back();
  test::qemu_io("qcow2", top,
                test::random_qemu_io_ops(rng, t.size, 1ull << t.cluster_bits, 0xc0, 20));
  test::expect_qemu_check_clean(top);
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, top), test::qemu_flat(top, scratch()),
                    "libimg read after qemu-io");
}

// Regression: libimg could not create a version 3 overlay with 512-byte clusters and a backing
// file ("header extensions and backing file name do not fit in one 512-byte cluster"): it
// always wrote the 392-byte feature name table, which QEMU 7.2 leaves out with clusters of
// 4 KiB and less. The first cluster now holds what qemu-img create writes, byte for byte.
TEST(LibimgMadeHeader, SmallClusterOverlaysWithBackingNamesMatchQemuImgCreate) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::TempDir dir;
  auto loop = test::make_loop();
  const std::string name = "sub/" + std::string(200, 'n') + ".qcow2";
  std::filesystem::create_directories(dir.file("sub"));
  test::qemu_ok("qemu-img create -q -f qcow2 " + shell_quote(dir.file(name)) + " 1M");
  for (uint32_t cs : {512u, 1024u, 4096u, 8192u, 65536u}) {
    SCOPED_TRACE(cs);
    test::qemu_ok("qemu-img create -q -f qcow2 -o cluster_size=" + std::to_string(cs) + " -b " +
                  shell_quote(name) + " -F qcow2 " + shell_quote(dir.file("q.qcow2")) + " 1M");
    auto f = open_host_file(*loop, dir.file("l.qcow2"), {.create = true, .truncate = true});
    ASSERT_TRUE(f.has_value()) << f.error().to_string();
    ASSERT_OK(loop->run(create_qcow2(
        **f,
        {.size = 1 << 20, .cluster_size = cs, .backing_file = name, .backing_format = "qcow2"})));
    ASSERT_OK(loop->run((*f)->flush()));
    f->reset();
    auto q = test::read_host_file(dir.file("q.qcow2"));
    auto l = test::read_host_file(dir.file("l.qcow2"));
    ASSERT_GE(q.size(), cs);
    ASSERT_GE(l.size(), cs);
    EXPECT_SAME_BYTES(std::vector<uint8_t>(l.begin(), l.begin() + cs),
                      std::vector<uint8_t>(q.begin(), q.begin() + cs), "the header cluster");
    test::expect_qemu_check_clean(dir.file("l.qcow2"));
    EXPECT_SAME_BYTES(test::libimg_flat(*loop, dir.file("l.qcow2")),
                      test::qemu_flat(dir.file("l.qcow2"), dir.file("flat.raw")), "l.qcow2");
  }
}

INSTANTIATE_TEST_SUITE_P(Chains, LibimgMadeChain, ::testing::ValuesIn(made_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
