// Crash safety of snapshot create, apply and delete (the crash test's machinery, qcow2_crash_test
// .cc, applied to the whole-image snapshot operations). Each operation is cut at every one of
// its writes: from write k on the file fails, the operation returns an error, and the file then
// crashes (unflushed writes dropped, or a random subset kept). Then:
//   - the image opens, and its snapshot table is the old or the new one, nothing else;
//   - the active disk reads as before the operation or (apply) as the snapshot;
//   - every snapshot listed still reads as it was taken;
//   - what check finds is only leaks and COPIED flags, never a refcount below its references;
//     once the leaks are repaired no COPIED flag is set on a cluster something else references
//     (the unsafe direction), only clear ones where the refcount is 1 remain (as QEMU leaves
//     them), and `check -r all` leaves the image clean.
#include <random>
#include <vector>

#include "img/image.h"
#include "img/snapshot.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

using test::make_loop;

enum class Op { kCreate, kApply, kDelete };
constexpr uint64_t kSize = 1 << 20;

std::vector<uint8_t> pattern(uint8_t seed) {
  std::vector<uint8_t> v(kSize);
  for (uint64_t i = 0; i < kSize; ++i) v[i] = uint8_t(seed * 31 + i / 509 + i * 3);
  return v;
}

std::vector<std::string> names(const BlockDriver& d) {
  std::vector<std::string> out;
  auto l = list_snapshots(d);
  if (l)
    for (auto& s : *l) out.push_back(s.id + ":" + s.name);
  return out;
}

using test::read_all;

struct Scenario {
  Qcow2CreateOptions opts;
  std::vector<uint8_t> a = pattern(1), b = pattern(2);
  // s1 holds a; the active disk holds b (half of it rewritten after s1).
  void setup(IoLoop& loop, test::MemImage& m) const {
    ASSERT_OK(loop.run(m.drv->write(0, a.data(), kSize)));
    ASSERT_TRUE(loop.run(create_snapshot(*m.drv, {.name = "s1"})).has_value());
    ASSERT_OK(loop.run(m.drv->write(kSize / 2, b.data() + kSize / 2, kSize / 2)));
    ASSERT_OK(loop.run(m.drv->write(0, b.data(), kSize / 8)));
    ASSERT_OK(loop.run(m.drv->flush()));
  }
  std::vector<uint8_t> active_before() const {
    std::vector<uint8_t> v = a;
    std::copy(b.begin() + kSize / 2, b.end(), v.begin() + kSize / 2);
    std::copy(b.begin(), b.begin() + kSize / 8, v.begin());
    return v;
  }
};

Status run(IoLoop& loop, BlockDriver& d, Op op) {
  switch (op) {
    case Op::kCreate: {
      auto r = loop.run(create_snapshot(d, {.name = "s2"}));
      if (!r) return Unexpected(r.error());
      return {};
    }
    case Op::kApply:
      return loop.run(apply_snapshot(d, "s1"));
    default:
      return loop.run(delete_snapshot(d, "1"));
  }
}

// The content of snapshot `id` in a copy of the image bytes.
std::vector<uint8_t> snapshot_content(IoLoop& loop, const Qcow2CreateOptions& o,
                                      const std::vector<uint8_t>& bytes, const std::string& id) {
  test::MemImage copy(loop, o);
  copy.close();
  copy.file_bytes() = bytes;
  EXPECT_OK(copy.open({}));
  if (!copy.drv) return {};
  EXPECT_OK(loop.run(apply_snapshot(*copy.drv, id)));
  return read_all(loop, *copy.drv);
}

void cut_at(const Scenario& sc, Op op, uint64_t k, bool random_subset, uint64_t* total_writes) {
  auto loop = make_loop();
  test::MemImage m(*loop, sc.opts);
  ASSERT_NO_FATAL_FAILURE(sc.setup(*loop, m));
  const auto before = names(*m.drv);
  const uint64_t start = m.fault_file().mutating_ops_seen();
  m.fault_file().fail_from_op(k);
  Status st = run(*loop, *m.drv, op);
  *total_writes = m.fault_file().mutating_ops_seen() - start;
  m.fault_file().stop_failing();
  if (random_subset) {
    std::mt19937_64 rng(k * 977 + int(op));
    m.fault_file().crash_keep_random_subset(rng);
  } else {
    m.fault_file().crash_drop_unflushed();
  }
  m.abandon();
  SCOPED_TRACE("cut at write " + std::to_string(k) + (random_subset ? " (random subset)" : "") +
               (st ? " (op completed)" : " (op failed: " + st.error().to_string() + ")"));

  ASSERT_OK(m.open({}));
  const auto after = names(*m.drv);
  std::vector<std::string> want_after = before;
  if (op == Op::kCreate) want_after.push_back("2:s2");
  if (op == Op::kDelete) want_after.clear();
  EXPECT_TRUE(after == before || after == want_after) << "snapshot table is neither old nor new";
  const auto active = read_all(*loop, *m.drv);
  if (op == Op::kApply) {
    EXPECT_TRUE(active == sc.active_before() || active == sc.a) << "active disk is neither";
  } else {
    EXPECT_EQ(active, sc.active_before());
  }
  m.abandon();  // read only so far; nothing to write back
  const std::vector<uint8_t> bytes = m.file_bytes();
  for (const auto& s : after) {
    std::string id = s.substr(0, s.find(':'));
    auto content = snapshot_content(*loop, sc.opts, bytes, id);
    EXPECT_EQ(content, id == "1" ? sc.a : sc.active_before()) << "snapshot " << s;
  }

  // Only leaks (and flags that follow them); `check -r leaks` leaves a clean image.
  auto r = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  for (const auto& msg : r->messages) {
    bool ok = msg.rfind("Leaked cluster", 0) == 0 || msg.find("OFLAG_COPIED") != std::string::npos;
    EXPECT_TRUE(ok) << msg;
  }
  // After the leaks are repaired, a flag may still be clear where the refcount is 1 (COPIED
  // was cleared before a commit that never came: QEMU leaves the same), which costs a needless
  // copy-on-write. Never the other way: a COPIED flag on a cluster that something else still
  // references would let a write change a snapshot. `check -r all` then leaves it clean.
  auto fixed = loop->run(check_qcow2(m.fault_file(), RepairMode::kLeaks));
  ASSERT_TRUE(fixed.has_value()) << fixed.error().to_string();
  auto mid = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_TRUE(mid.has_value());
  EXPECT_EQ(mid->leaks, 0u);
  for (const auto& msg : mid->messages) {
    size_t at = msg.find("_entry=");
    ASSERT_NE(at, std::string::npos) << msg;
    uint64_t entry = std::stoull(msg.substr(at + 7), nullptr, 16);
    EXPECT_EQ(entry >> 63, 0u) << "COPIED set on a shared cluster: " << msg;
  }
  auto all = loop->run(check_qcow2(m.fault_file(), RepairMode::kAll));
  ASSERT_TRUE(all.has_value()) << all.error().to_string();
  auto again = loop->run(check_qcow2(m.fault_file(), RepairMode::kNone));
  ASSERT_TRUE(again.has_value());
  std::string msgs;
  for (auto& s : again->messages) msgs += s + "\n";
  EXPECT_EQ(again->corruptions, 0u) << msgs;
  EXPECT_EQ(again->leaks, 0u) << msgs;
  EXPECT_EQ(again->check_errors, 0u) << msgs;
}

class SnapshotCrash : public ::testing::TestWithParam<std::tuple<Op, Qcow2CreateOptions>> {};

TEST_P(SnapshotCrash, EveryWriteOfTheOperationIsACutPoint) {
  auto [op, opts] = GetParam();
  Scenario sc{.opts = opts};
  uint64_t total = 0;
  ASSERT_NO_FATAL_FAILURE(cut_at(sc, op, UINT64_MAX / 2, false, &total));  // learns the count
  ASSERT_GE(total, 3u);  // at least: new table or flags, refcounts, header
  for (uint64_t k = 0; k <= total; ++k) {
    uint64_t n = 0;
    ASSERT_NO_FATAL_FAILURE(cut_at(sc, op, k, false, &n));
    ASSERT_NO_FATAL_FAILURE(cut_at(sc, op, k, true, &n));
  }
}

std::string CaseName(const ::testing::TestParamInfo<std::tuple<Op, Qcow2CreateOptions>>& info) {
  static const char* const kOps[] = {"create", "apply", "delete"};
  return std::string(kOps[int(std::get<0>(info.param))]) + "_c" +
         std::to_string(std::get<1>(info.param).cluster_size);
}

INSTANTIATE_TEST_SUITE_P(
    Ops, SnapshotCrash,
    ::testing::Combine(::testing::Values(Op::kCreate, Op::kApply, Op::kDelete),
                       ::testing::Values(Qcow2CreateOptions{.size = kSize, .cluster_size = 512},
                                         Qcow2CreateOptions{.size = kSize,
                                                            .cluster_size = 4096,
                                                            .refcount_bits = 8,
                                                            .lazy_refcounts = true})),
    CaseName);

}  // namespace
}  // namespace img
