// Compressed clusters against QEMU 7.2 (the reference): images qemu-img convert -c writes
// (deflate and zstd, several cluster sizes) read back bit for bit through libimg; clusters
// libimg writes compressed pass qemu-img check and read back through qemu-img; a write by libimg
// into qemu-img's compressed clusters leaves an image that qemu-img checks clean and qemu-io
// reads as the merged data.
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "img/image.h"
#include "img/qcow2.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;
using test::run_tool;
using test::shell_quote;

std::vector<uint8_t> read_host_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_host_file(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// 6 MiB less a sector (the last cluster is partial): text-like runs, incompressible noise,
// zeros, and short repeating patterns, in pieces that do not line up with clusters.
std::vector<uint8_t> mixed_data(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v((6u << 20) - 512);
  static const char* kWords[] = {"alpha ", "beta ", "gamma ", "delta ", "qcow2 ", "\n"};
  size_t i = 0;
  while (i < v.size()) {
    size_t n = std::min<size_t>(v.size() - i, 1000 + rng() % 200000);
    switch (rng() % 4) {
      case 0:
        for (size_t k = 0; k < n;) {
          const char* w = kWords[rng() % 6];
          for (; *w && k < n; ++w) v[i + k++] = static_cast<uint8_t>(*w);
        }
        break;
      case 1:
        for (size_t k = 0; k < n; ++k) v[i + k] = static_cast<uint8_t>(rng());
        break;
      case 2:
        break;  // zeros
      default:
        for (size_t k = 0; k < n; ++k) v[i + k] = static_cast<uint8_t>(k % 7 + (i >> 16));
    }
    i += n;
  }
  return v;
}

std::vector<uint8_t> libimg_flat(IoLoop& loop, const std::string& path) {
  auto d = loop.run(open_image(loop, path, {.read_only = true}));
  EXPECT_TRUE(d.has_value()) << d.error().to_string();
  if (!d) return {};
  std::vector<uint8_t> out((*d)->size());
  auto s = loop.run((*d)->read(0, out.data(), out.size()));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  (void)loop.run((*d)->close());
  return out;
}

std::vector<uint8_t> qemu_flat(const test::TempDir& dir, const std::string& path) {
  std::string raw = dir.file("flat.raw");
  auto r = run_tool("qemu-img convert -O raw " + shell_quote(path) + " " + shell_quote(raw));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_host_file(raw);
}

void expect_qemu_check_clean(const std::string& path) {
  auto r = run_tool("qemu-img check --output=json " + shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::json_count(r.output, "corruptions"), 0u) << r.output;
  EXPECT_EQ(test::json_count(r.output, "leaks"), 0u) << r.output;
  EXPECT_EQ(test::json_count(r.output, "check-errors"), 0u) << r.output;
}

int64_t first_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return static_cast<int64_t>(std::min(a.size(), b.size()));
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

struct Case {
  const char* name;
  const char* options;  // qemu-img -o
};

class QemuCompressed : public ::testing::TestWithParam<Case> {};

TEST_P(QemuCompressed, LibimgReadsBitForBit) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::TempDir dir;
  auto data = mixed_data(1);
  std::string raw = dir.file("src.raw"), comp = dir.file("c.qcow2");
  write_host_file(raw, data);
  auto r = run_tool(std::string("qemu-img convert -c -f raw -O qcow2 -o ") + GetParam().options +
                    " " + shell_quote(raw) + " " + shell_quote(comp));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto check = run_tool("qemu-img check --output=json " + shell_quote(comp));
  ASSERT_GT(test::json_count(check.output, "compressed-clusters"), 0u) << check.output;
  auto loop = make_loop();
  EXPECT_EQ(first_difference(libimg_flat(*loop, comp), data), -1);
}

TEST_P(QemuCompressed, LibimgWriteIntoCompressedClustersReadsBackInQemu) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::TempDir dir;
  auto data = mixed_data(2);
  std::string raw = dir.file("src.raw"), comp = dir.file("c.qcow2");
  write_host_file(raw, data);
  auto r = run_tool(std::string("qemu-img convert -c -f raw -O qcow2 -o ") + GetParam().options +
                    " " + shell_quote(raw) + " " + shell_quote(comp));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto loop = make_loop();
  {
    auto d = loop->run(open_image(*loop, comp, {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    // Partial writes (head and tail merged with decompressed data) and one long write that
    // replaces whole compressed clusters.
    struct W {
      uint64_t off, len;
      uint8_t byte;
    };
    for (W w : {W{1000, 3000, 0x62}, W{(1u << 20) + 70000, 200000, 0x63},
                W{(3u << 20) - 100, 1u << 20, 0x64}}) {
      std::vector<uint8_t> b(w.len, w.byte);
      ASSERT_OK(loop->run((*d)->write(w.off, b.data(), b.size())));
      std::fill(data.begin() + w.off, data.begin() + w.off + w.len, w.byte);
    }
    ASSERT_OK(loop->run((*d)->close()));
  }
  expect_qemu_check_clean(comp);
  auto io = run_tool("qemu-io -r -c 'read -P 0x62 1000 3000' -c 'read -P 0x63 1118576 200000' " +
                     shell_quote(comp));
  EXPECT_EQ(io.exit_code, 0) << io.output;
  EXPECT_EQ(io.output.find("Pattern verification failed"), std::string::npos) << io.output;
  EXPECT_EQ(first_difference(qemu_flat(dir, comp), data), -1);
}

INSTANTIATE_TEST_SUITE_P(
    Qemu, QemuCompressed,
    ::testing::Values(Case{"zlib_64k", "compression_type=zlib"},
                      Case{"zstd_64k", "compression_type=zstd"},
                      Case{"zlib_4k", "cluster_size=4096"},
                      Case{"zstd_512", "cluster_size=512,compression_type=zstd"},
                      Case{"zlib_2m_v2", "cluster_size=2M,compat=0.10"},
                      Case{"zstd_64k_rc1", "compression_type=zstd,refcount_bits=1"}),
    [](const auto& info) { return std::string(info.param.name); });

// libimg's write_compressed on a host file, read by qemu-img.
class LibimgCompressed : public ::testing::TestWithParam<Case> {};

TEST_P(LibimgCompressed, QemuChecksCleanAndReadsBitForBit) {
  SKIP_WITHOUT_QEMU_TOOLS();
  test::TempDir dir;
  auto data = mixed_data(3);
  std::string path = dir.file("w.qcow2");
  auto r = run_tool(std::string("qemu-img create -q -f qcow2 -o ") + GetParam().options + " " +
                    shell_quote(path) + " " + std::to_string(data.size()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto loop = make_loop();
  {
    auto d = loop->run(open_image(*loop, path, {}));
    ASSERT_TRUE(d.has_value()) << d.error().to_string();
    uint64_t cs = (*d)->compressed_cluster_size();
    ASSERT_GT(cs, 0u);
    // In several calls of whole clusters, the last one ending in the partial last cluster.
    uint64_t step = cs * 5;
    for (uint64_t off = 0; off < data.size(); off += step) {
      uint64_t n = std::min<uint64_t>(step, data.size() - off);
      ASSERT_OK(loop->run((*d)->write_compressed(off, data.data() + off, n)));
    }
    ASSERT_OK(loop->run((*d)->close()));
  }
  expect_qemu_check_clean(path);
  auto check = run_tool("qemu-img check --output=json " + shell_quote(path));
  EXPECT_GT(test::json_count(check.output, "compressed-clusters"), 0u) << check.output;
  EXPECT_EQ(first_difference(qemu_flat(dir, path), data), -1);
}

INSTANTIATE_TEST_SUITE_P(
    Qemu, LibimgCompressed,
    ::testing::Values(Case{"zlib_64k", "compression_type=zlib"},
                      Case{"zstd_64k", "compression_type=zstd"},
                      Case{"zlib_512", "cluster_size=512"},
                      Case{"zstd_4k_rc2",
                           "cluster_size=4096,compression_type=zstd,refcount_bits=2"},
                      Case{"zlib_2m", "cluster_size=2M"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
