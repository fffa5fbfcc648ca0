// Interoperability with QEMU (DESIGN.md: qemu-img is the reference): images libimg creates and
// writes pass `qemu-img check` and read back through `qemu-img convert` exactly as written;
// images qemu-img/qemu-io create and write read back through libimg exactly as qemu-img reads
// them, and stay clean after libimg writes into them.
#include <fstream>
#include <iterator>
#include <vector>

#include "img/image.h"
#include "img/qcow2.h"
#include "qcow2_workload.h"
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

// `qemu-img check` finds nothing at all: exit 0, no corruptions, leaks or check errors.
void expect_qemu_check_clean(const std::string& path) {
  auto r = run_tool("qemu-img check --output=json " + shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::json_count(r.output, "corruptions"), 0u) << r.output;
  EXPECT_EQ(test::json_count(r.output, "leaks"), 0u) << r.output;
  EXPECT_EQ(test::json_count(r.output, "check-errors"), 0u) << r.output;
}

// The guest-visible bytes as qemu-img reads them.
std::vector<uint8_t> qemu_flat(const test::TempDir& dir, const std::string& path) {
  std::string raw = dir.file("flat.raw");
  auto r = run_tool("qemu-img convert -O raw " + shell_quote(path) + " " + shell_quote(raw));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return read_host_file(raw);
}

// The guest-visible bytes as libimg reads them.
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

// Runs ops through libimg on an image file, applying them to model too.
void run_workload(IoLoop& loop, const std::string& path, const std::vector<test::WorkOp>& ops,
                  std::vector<uint8_t>& model, uint64_t cluster_size) {
  auto d = loop.run(open_image(loop, path, {}));
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  ASSERT_EQ((*d)->size(), model.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    auto s = loop.run(test::run_op(**d, ops[i]));
    ASSERT_TRUE(s.has_value()) << "op " << i << " " << test::describe(ops[i]) << ": "
                               << s.error().to_string();
    test::apply_to_model(model, ops[i], cluster_size);
  }
  ASSERT_OK(loop.run((*d)->close()));
}

void expect_same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                       const char* who) {
  ASSERT_EQ(got.size(), want.size()) << who;
  int64_t d = test::first_difference(got, want);
  EXPECT_EQ(d, -1) << who << " differs first at byte " << d << " (got "
                   << (d >= 0 ? int(got[d]) : -1) << ", want " << (d >= 0 ? int(want[d]) : -1)
                   << ")";
}

// --- libimg writes, qemu-img reads -------------------------------------------------------------

struct CreateCase {
  const char* name;
  int version;
  uint32_t cluster_size;
  uint32_t refcount_bits;
  bool lazy;
  Preallocation prealloc;
};

class LibimgWritesQemuReads : public ::testing::TestWithParam<CreateCase> {};

TEST_P(LibimgWritesQemuReads, CheckIsCleanAndConvertMatches) {
  SKIP_WITHOUT_QEMU_TOOLS();
  const CreateCase& c = GetParam();
  auto loop = make_loop();
  test::TempDir dir;
  std::string path = dir.file("img.qcow2");
  // Not a multiple of the larger cluster sizes: the last cluster is partial.
  const uint64_t size = (9ull << 20) - 1536;
  {
    auto f = open_host_file(*loop, path, {.create = true, .truncate = true});
    ASSERT_TRUE(f.has_value()) << f.error().to_string();
    ASSERT_OK(loop->run(create_qcow2(**f, {.size = size,
                                           .version = c.version,
                                           .cluster_size = c.cluster_size,
                                           .refcount_bits = c.refcount_bits,
                                           .lazy_refcounts = c.lazy,
                                           .preallocation = c.prealloc})));
  }
  std::vector<uint8_t> model(size, 0);
  // ~80 ops with writes up to 160 KiB (a few of 640 KiB): several MiB in all, crossing cluster
  // and L2-table boundaries for every cluster size.
  auto ops = test::make_workload(c.cluster_size * 31 + c.refcount_bits, size, 80, 160 << 10);
  ASSERT_NO_FATAL_FAILURE(run_workload(*loop, path, ops, model, c.cluster_size));

  expect_qemu_check_clean(path);
  expect_same_bytes(qemu_flat(dir, path), model, "qemu-img convert");
  expect_same_bytes(libimg_flat(*loop, path), model, "libimg read");
  auto info = run_tool("qemu-img info --output=json " + shell_quote(path));
  EXPECT_EQ(test::json_field(info.output, "dirty-flag"), "false") << info.output;
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, LibimgWritesQemuReads,
    ::testing::Values(
        CreateCase{"v2_64k", 2, 65536, 16, false, Preallocation::kOff},
        CreateCase{"v2_512", 2, 512, 16, false, Preallocation::kOff},
        CreateCase{"v2_4k_metadata", 2, 4096, 16, false, Preallocation::kMetadata},
        CreateCase{"v2_2m_falloc", 2, 2 << 20, 16, false, Preallocation::kFalloc},
        CreateCase{"v3_512_rc1", 3, 512, 1, false, Preallocation::kOff},
        CreateCase{"v3_512_rc64_lazy", 3, 512, 64, true, Preallocation::kOff},
        CreateCase{"v3_512_rc16_metadata", 3, 512, 16, false, Preallocation::kMetadata},
        CreateCase{"v3_4k_rc1_lazy", 3, 4096, 1, true, Preallocation::kOff},
        CreateCase{"v3_4k_rc16_falloc", 3, 4096, 16, false, Preallocation::kFalloc},
        CreateCase{"v3_4k_rc64_full", 3, 4096, 64, false, Preallocation::kFull},
        CreateCase{"v3_64k_rc16", 3, 65536, 16, false, Preallocation::kOff},
        CreateCase{"v3_64k_rc64_full", 3, 65536, 64, false, Preallocation::kFull},
        CreateCase{"v3_64k_rc16_lazy_metadata", 3, 65536, 16, true, Preallocation::kMetadata},
        CreateCase{"v3_2m_rc16", 3, 2 << 20, 16, false, Preallocation::kOff},
        CreateCase{"v3_2m_rc1_metadata", 3, 2 << 20, 1, false, Preallocation::kMetadata},
        CreateCase{"v3_2m_rc64_lazy_full", 3, 2 << 20, 64, true, Preallocation::kFull}),
    [](const auto& info) { return std::string(info.param.name); });

// --- qemu-img/qemu-io write, libimg reads and writes more ---------------------------------------

struct QemuCase {
  const char* name;
  const char* create_opts;  // qemu-img create -o
  uint64_t size;
  uint64_t cluster_size;
  const char* qemu_io;  // qemu-io -c commands
  bool leave_dirty;     // killed with SIGKILL after writing (lazy refcounts): header stays dirty
};

class QemuWritesLibimgReads : public ::testing::TestWithParam<QemuCase> {};

TEST_P(QemuWritesLibimgReads, ReadsIdenticallyThenWritesStayClean) {
  SKIP_WITHOUT_QEMU_TOOLS();
  const QemuCase& c = GetParam();
  auto loop = make_loop();
  test::TempDir dir;
  std::string path = dir.file("img.qcow2");
  auto r = run_tool("qemu-img create -f qcow2 -o " + std::string(c.create_opts) + " " +
                    shell_quote(path) + " " + std::to_string(c.size));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string io = std::string("qemu-io ") + c.qemu_io;
  if (c.leave_dirty) io += " -c 'sigraise 9'";
  r = run_tool(io + " " + shell_quote(path));
  if (c.leave_dirty) {
    ASSERT_NE(r.exit_code, 0) << "qemu-io should have been killed: " << r.output;
  } else {
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  if (c.leave_dirty) {
    r = run_tool("qemu-img info --output=json " + shell_quote(path));
    ASSERT_EQ(test::json_field(r.output, "dirty-flag"), "true") << r.output;
  }

  // qemu-img reads a dirty image through its own repair on open; what it sees is the reference.
  std::vector<uint8_t> want = qemu_flat(dir, path);
  ASSERT_EQ(want.size(), c.size);
  expect_same_bytes(libimg_flat(*loop, path), want, "libimg read of qemu's image");

  // libimg writes more (for the dirty image, opening read-write rebuilds refcounts first).
  auto ops = test::make_workload(c.size ^ c.cluster_size, c.size, 40, 96 << 10);
  ASSERT_NO_FATAL_FAILURE(run_workload(*loop, path, ops, want, c.cluster_size));
  expect_qemu_check_clean(path);
  expect_same_bytes(qemu_flat(dir, path), want, "qemu-img convert after libimg wrote");
  expect_same_bytes(libimg_flat(*loop, path), want, "libimg read after libimg wrote");
}

constexpr char kQemuWrites[] =
    "-c 'write -P 0x11 0 1M' -c 'write -P 0x22 1536 70k' -c 'write -z 300k 200k' "
    "-c 'discard 600k 300k' -c 'write -P 0x33 2560k 3k' -c 'write -z 2M 64k'";

INSTANTIATE_TEST_SUITE_P(
    Images, QemuWritesLibimgReads,
    ::testing::Values(
        QemuCase{"compat010", "compat=0.10", 4 << 20, 65536, kQemuWrites, false},
        QemuCase{"compat010_512", "compat=0.10,cluster_size=512", 3 << 20, 512, kQemuWrites, false},
        QemuCase{"rc1_512", "refcount_bits=1,cluster_size=512", 3 << 20, 512, kQemuWrites, false},
        QemuCase{"rc64_2m", "refcount_bits=64,cluster_size=2M", 5 << 20, 2 << 20, kQemuWrites,
                 false},
        QemuCase{"prealloc_metadata", "preallocation=metadata,cluster_size=4096", 4 << 20, 4096,
                 kQemuWrites, false},
        QemuCase{"lazy_dirty", "lazy_refcounts=on,cluster_size=4096", 4 << 20, 4096, kQemuWrites,
                 true},
        QemuCase{"lazy_dirty_rc64_512", "lazy_refcounts=on,cluster_size=512,refcount_bits=64",
                 3 << 20, 512, kQemuWrites, true}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace img
