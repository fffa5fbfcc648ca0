// Backing chains between libimg and QEMU 7.2, both ways (DESIGN.md: qemu-img is the reference).
// Chains that qemu-img creates and qemu-io fills (every layer written, zeroed and discarded; raw
// and qcow2 bases; version 2 and 3; 512 B to 2 MiB clusters; backing files shorter and longer
// than their overlays; relative names across folders) read back through libimg exactly as
// `qemu-img convert` reads them, and libimg's block_status says what `qemu-img map` says about
// every range. libimg's writes into the top of such a chain leave it clean for `qemu-img
// check`, read back in qemu-img and qemu-io exactly as a model says, and never touch the
// backing files.
#include <random>

#include "chain_interop.h"

namespace img {
namespace {

using test::LayerSpec;

struct ChainCase {
  const char* name;
  std::vector<LayerSpec> layers;  // base first, top last
};

constexpr uint64_t kK = 1024, kM = 1024 * 1024;

std::vector<ChainCase> chain_cases() {
  return {
      {"Depth1Qcow2BaseShorter", {{"base.qcow2", "qcow2", 1 * kM}, {"top.qcow2", "qcow2", 3 * kM}}},
      {"Depth1RawBaseLonger",
       {{"base.raw", "raw", 5 * kM + 512}, {"top.qcow2", "qcow2", 3 * kM + 1536}}},
      {"Depth1V2OverV3SmallClusters",
       {{"base.qcow2", "qcow2", 2 * kM, 16, "1.1"}, {"top.qcow2", "qcow2", 2 * kM, 9, "0.10"}}},
      {"Depth2RawBaseRelativeFolders4K",
       {{"images/a/base.raw", "raw", 2 * kM},
        {"images/b/mid.qcow2", "qcow2", 3 * kM, 12},
        {"top/top.qcow2", "qcow2", 2 * kM + 512, 12}}},
      {"Depth2V2Everywhere",
       {{"base.qcow2", "qcow2", 3 * kM, 16, "0.10"},
        {"mid.qcow2", "qcow2", 2 * kM, 16, "0.10"},
        {"top.qcow2", "qcow2", 4 * kM, 16, "0.10"}}},
      {"Depth2TwoMiBClusters",
       {{"base.qcow2", "qcow2", 5 * kM + 512, 21},
        {"mid.qcow2", "qcow2", 7 * kM, 21},
        {"top.qcow2", "qcow2", 9 * kM, 21}}},
      {"Depth3MixedClusterSizes",
       {{"l0/base.raw", "raw", 700 * kK},
        {"l1/one.qcow2", "qcow2", 1 * kM, 21, "0.10"},
        {"l1/l2/two.qcow2", "qcow2", 600 * kK, 9},
        {"three.qcow2", "qcow2", 1 * kM + 512, 14}}},
      // Extended L2 (subclusters): copy-on-write of single subclusters, zero bits.
      {"Depth1ExtendedL2OverQcow2",
       {{"base.qcow2", "qcow2", 3 * kM, 16}, {"top.qcow2", "qcow2", 3 * kM, 16, "1.1", true}}},
      {"Depth2ExtendedL2Everywhere16K",
       {{"base.raw", "raw", 2 * kM + 512},
        {"mid.qcow2", "qcow2", 2 * kM, 14, "1.1", true},
        {"top.qcow2", "qcow2", 3 * kM, 17, "1.1", true}}},
      {"Depth3HalfKiBClusters",
       {{"base.qcow2", "qcow2", 512 * kK, 9},
        {"x/mid1.qcow2", "qcow2", 384 * kK, 9},
        {"y/mid2.qcow2", "qcow2", 768 * kK, 9, "0.10"},
        {"top.qcow2", "qcow2", 640 * kK, 9}}},
  };
}

class QemuMadeChain : public ::testing::TestWithParam<ChainCase> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_QEMU_TOOLS();
    const auto& layers = GetParam().layers;
    std::mt19937_64 rng(std::hash<std::string>{}(GetParam().name));
    for (size_t i = 0; i < layers.size(); ++i) {
      test::qemu_create_layer(dir_.path(), layers, i);
      uint64_t cluster = layers[i].fmt == "qcow2" ? 1ull << layers[i].cluster_bits : 4096;
      auto ops = test::random_qemu_io_ops(rng, layers[i].size, cluster,
                                          0x10 + 0x30 * static_cast<unsigned>(i), 24);
      test::qemu_io(layers[i].fmt, path(i), ops);
    }
    ASSERT_FALSE(HasFailure());
  }
  std::string path(size_t i) const { return dir_.file(GetParam().layers[i].path); }
  std::string top() const { return path(GetParam().layers.size() - 1); }
  std::string scratch() const { return dir_.file("scratch.raw"); }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_P(QemuMadeChain, ReadsBackInLibimgAsQemuImgConvertReadsIt) {
  auto want = test::qemu_flat(top(), scratch());
  ASSERT_EQ(want.size(), GetParam().layers.back().size);
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, top()), want, "libimg read of " + top());
  // Every layer on its own (with its own chain) too.
  for (size_t i = 0; i + 1 < GetParam().layers.size(); ++i) {
    EXPECT_SAME_BYTES(test::libimg_flat(*loop_, path(i)), test::qemu_flat(path(i), scratch()),
                      "libimg read of " + path(i));
  }
}

TEST_P(QemuMadeChain, BlockStatusAgreesWithQemuImgMap) {
  test::expect_map_agrees_with_qemu(*loop_, top());
}

// What libimg does to the top image, and how the model follows it.
struct TopOp {
  enum Kind { kWrite, kZero, kZeroUnmap, kDiscard } kind;
  uint64_t off, len;
  uint8_t pattern;
};

std::vector<TopOp> top_ops(std::mt19937_64& rng, uint64_t size, uint64_t cluster) {
  std::vector<TopOp> ops;
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto add = [&](TopOp::Kind k, uint64_t off, uint64_t len) {
    if (off >= size) return;
    len = std::min(len, size - off);
    if (len > 0) ops.push_back({k, off, len, static_cast<uint8_t>(0xa0 + ops.size())});
  };
  // Fixed shapes first: a partial cluster, one crossing a cluster boundary, the last bytes.
  add(TopOp::kWrite, cluster / 3, cluster / 3 + 1);
  add(TopOp::kWrite, 2 * cluster - 100, 300);
  add(TopOp::kWrite, size - 700, 700);
  add(TopOp::kZero, 3 * cluster + 5, 2 * cluster);
  add(TopOp::kZeroUnmap, 6 * cluster, 3 * cluster + 17);
  add(TopOp::kDiscard, 10 * cluster + 1, 3 * cluster);
  for (int i = 0; i < 30; ++i) {
    uint64_t off = pick(size);
    uint64_t len = 1 + pick(std::min<uint64_t>(4 * cluster, 1 * kM));
    add(static_cast<TopOp::Kind>(pick(4)), off, len);
  }
  return ops;
}

// The model of a discard: whole clusters only (and the last, partial cluster of the image);
// on version 3 they read as zeros, on version 2 (no zero flag) the backing file shows again.
void model_discard(std::vector<uint8_t>& model, const std::vector<uint8_t>& below, const TopOp& op,
                   uint64_t cluster, bool v3) {
  uint64_t end = op.off + op.len;
  uint64_t first = (op.off + cluster - 1) / cluster * cluster;
  uint64_t last = end == model.size() ? model.size() : end / cluster * cluster;
  for (uint64_t i = first; i < last; ++i) model[i] = (!v3 && i < below.size()) ? below[i] : 0;
}

TEST_P(QemuMadeChain, LibimgWritesIntoTheTopKeepTheChainSound) {
  const auto& layers = GetParam().layers;
  const LayerSpec& top_spec = layers.back();
  const uint64_t cluster = 1ull << top_spec.cluster_bits;
  const bool v3 = top_spec.compat != "0.10";
  std::vector<std::vector<uint8_t>> files_before;
  for (size_t i = 0; i + 1 < layers.size(); ++i)
    files_before.push_back(test::read_host_file(path(i)));
  auto below = test::qemu_flat(path(layers.size() - 2), scratch());
  auto model = test::qemu_flat(top(), scratch());

  std::mt19937_64 rng(std::hash<std::string>{}(GetParam().name) + 1);
  auto ops = top_ops(rng, top_spec.size, cluster);
  {
    auto d = loop_->run(open_image(*loop_, top(), {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    for (const TopOp& op : ops) {
      std::string what = "op at " + std::to_string(op.off) + "+" + std::to_string(op.len);
      Status s;
      switch (op.kind) {
        case TopOp::kWrite: {
          std::vector<uint8_t> buf(op.len, op.pattern);
          s = loop_->run((*d)->write(op.off, buf.data(), buf.size()));
          std::fill_n(model.begin() + op.off, op.len, op.pattern);
          break;
        }
        case TopOp::kZero:
        case TopOp::kZeroUnmap:
          s = loop_->run((*d)->write_zeroes(op.off, op.len, {op.kind == TopOp::kZeroUnmap}));
          std::fill_n(model.begin() + op.off, op.len, 0);
          break;
        case TopOp::kDiscard:
          s = loop_->run((*d)->discard(op.off, op.len));
          // With extended L2 whole subclusters are discarded too (they read as zeros).
          model_discard(model, below, op, top_spec.extended_l2 ? cluster / 32 : cluster, v3);
          break;
      }
      ASSERT_TRUE(s.has_value()) << what << ": " << s.error().to_string();
    }
    ASSERT_OK(loop_->run((*d)->close()));
  }
  test::expect_qemu_check_clean(top());
  EXPECT_SAME_BYTES(test::qemu_flat(top(), scratch()), model, "qemu-img convert of " + top());
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, top()), model, "libimg read of " + top());
  for (size_t i = 0; i + 1 < layers.size(); ++i) {
    EXPECT_EQ(test::read_host_file(path(i)), files_before[i]) << path(i) << " changed";
  }
  // qemu-io reads each run of equal bytes with its pattern check (runs of at most 1 MiB).
  std::vector<std::string> reads;
  for (uint64_t i = 0; i < model.size();) {
    uint64_t j = i;
    while (j < model.size() && model[j] == model[i] && j - i < kM) ++j;
    reads.push_back("read -P " + std::to_string(model[i]) + " " + std::to_string(i) + " " +
                    std::to_string(j - i));
    i = j;
  }
  test::qemu_io("qcow2", top(), reads);
}

INSTANTIATE_TEST_SUITE_P(Chains, QemuMadeChain, ::testing::ValuesIn(chain_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
