// Model test: random sequences of write / write_zeroes / discard / flush / close-and-reopen and
// internal snapshot create / apply / delete at random unaligned offsets and lengths, over random
// cluster sizes, refcount widths, versions, lazy_refcounts and extended L2, compared with a flat
// in-memory disk after every step (the model keeps a copy of the disk per snapshot: applying one
// makes the disk that copy, deleting one changes nothing the guest sees). After every reopen the
// image's own consistency check is clean.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <vector>

#include "img/image.h"
#include "img/snapshot.h"
#include "qcow2_test_util.h"
#include "test_util.h"

namespace img {
namespace {

struct Op {
  enum Kind {
    kWrite,
    kZero,
    kZeroUnmap,
    kDiscard,
    kFlush,
    kReopen,
    kSnapCreate,
    kSnapApply,
    kSnapDelete
  } kind;
  uint64_t off;
  uint64_t len;
  uint8_t seed;
};

void showValue(const Op& op, std::ostream& os) {
  static const char* names[] = {"write",  "zero",        "zero-unmap", "discard",    "flush",
                                "reopen", "snap-create", "snap-apply", "snap-delete"};
  os << names[op.kind] << "(" << op.off << ", " << op.len << ")";
}

void check_against_model(IoLoop& loop, BlockDriver& d, const std::vector<uint8_t>& model) {
  std::vector<uint8_t> back(model.size());
  auto r = loop.run(d.read(0, back.data(), back.size()));
  RC_ASSERT(r.has_value());
  if (back != model) {
    size_t i = 0;
    while (back[i] == model[i]) ++i;
    RC_FAIL("image differs from the model at byte " + std::to_string(i) + ": got " +
            std::to_string(back[i]) + ", want " + std::to_string(model[i]));
  }
}

void check_clean(IoLoop& loop, test::MemImage& m) {
  auto r = loop.run(check_qcow2(m.fault_file(), RepairMode::kNone));
  RC_ASSERT(r.has_value());
  std::string msgs;
  for (auto& s : r->messages) msgs += s + "; ";
  if (r->corruptions + r->leaks + r->check_errors > 0) RC_FAIL("check is not clean: " + msgs);
}

RC_GTEST_PROP(Qcow2Model, RandomOpsMatchAFlatDisk, ()) {
  const uint32_t cluster_bits = *rc::gen::inRange<uint32_t>(9, 17);  // 512 B .. 64 KiB
  const int version = *rc::gen::element(2, 3);
  const uint32_t refcount_bits =
      version == 2 ? 16 : *rc::gen::element<uint32_t>(1, 2, 4, 8, 16, 32, 64);
  const bool lazy = version == 3 && *rc::gen::arbitrary<bool>();
  // qcow2 rounds the virtual size up to 512 bytes, as QEMU does.
  const uint64_t size = (*rc::gen::inRange<uint64_t>(1, 3 << 20) + 511) / 512 * 512;
  const bool extended = version == 3 && cluster_bits >= 14 && *rc::gen::arbitrary<bool>();
  RC_TAG(cluster_bits, version, refcount_bits, lazy, extended);

  auto loop = test::make_loop();
  test::MemImage m(*loop, {.size = size,
                           .version = version,
                           .cluster_size = 1u << cluster_bits,
                           .refcount_bits = refcount_bits,
                           .lazy_refcounts = lazy,
                           .extended_l2 = extended});
  RC_ASSERT(m.drv != nullptr);
  RC_ASSERT(m.drv->size() == size);
  std::vector<uint8_t> model(size, 0);
  const uint64_t cs = 1ull << cluster_bits;

  auto gen_op = rc::gen::apply(
      [size](int kind, uint64_t a, uint64_t b, uint8_t seed) {
        uint64_t off = a % size;
        uint64_t len = std::min<uint64_t>(b % (300000), size - off);
        return Op{static_cast<Op::Kind>(kind), off, len, seed};
      },
      rc::gen::weightedElement<int>({{10, Op::kWrite},
                                     {2, Op::kZero},
                                     {2, Op::kZeroUnmap},
                                     {2, Op::kDiscard},
                                     {2, Op::kFlush},
                                     {1, Op::kReopen},
                                     {1, Op::kSnapCreate},
                                     {1, Op::kSnapApply},
                                     {1, Op::kSnapDelete}}),
      rc::gen::arbitrary<uint64_t>(), rc::gen::arbitrary<uint64_t>(),
      rc::gen::arbitrary<uint8_t>());
  const auto ops = *rc::gen::container<std::vector<Op>>(gen_op);
  // The snapshots by id, in creation order, each with the disk it recorded.
  std::vector<std::pair<std::string, std::vector<uint8_t>>> snaps;
  bool snapshot_taken = false;
  auto narrow = [&](const Error& e) {
    if (e.message().find("(refcount_bits=") != std::string::npos) return true;
    RC_FAIL("snapshot operation failed: " + e.to_string());
    return false;
  };

  for (const Op& op : ops) {
    switch (op.kind) {
      case Op::kWrite: {
        std::vector<uint8_t> buf(op.len);
        for (uint64_t i = 0; i < op.len; ++i) buf[i] = static_cast<uint8_t>(op.seed + i * 13);
        auto s = loop->run(m.drv->write(op.off, buf.data(), buf.size()));
        RC_ASSERT(s.has_value());
        std::copy(buf.begin(), buf.end(), model.begin() + op.off);
        break;
      }
      case Op::kZero:
      case Op::kZeroUnmap: {
        auto s = loop->run(m.drv->write_zeroes(op.off, op.len, {op.kind == Op::kZeroUnmap}));
        RC_ASSERT(s.has_value());
        std::fill(model.begin() + op.off, model.begin() + op.off + op.len, 0);
        break;
      }
      case Op::kDiscard: {
        auto s = loop->run(m.drv->discard(op.off, op.len));
        RC_ASSERT(s.has_value());
        // Whole clusters only (the image's last cluster counts whole at the end); with
        // extended L2 whole subclusters.
        const uint64_t unit = extended ? cs / 32 : cs;
        uint64_t a = (op.off + unit - 1) / unit * unit;
        uint64_t end = op.off + op.len;
        uint64_t b = end == size ? size : end / unit * unit;
        if (b <= a) break;
        if (!snapshot_taken) {
          std::fill(model.begin() + a, model.begin() + b, 0);
          break;
        }
        // A cluster a snapshot shares keeps its data: discard is advisory (BlockDriver::discard),
        // so each byte reads as before or as zero, and the model takes what the image says.
        std::vector<uint8_t> now(b - a);
        RC_ASSERT(loop->run(m.drv->read(a, now.data(), now.size())).has_value());
        for (uint64_t i = 0; i < now.size(); ++i) {
          RC_ASSERT(now[i] == model[a + i] || now[i] == 0);
        }
        std::copy(now.begin(), now.end(), model.begin() + a);
        break;
      }
      case Op::kFlush: {
        auto s = loop->run(m.drv->flush());
        RC_ASSERT(s.has_value());
        break;
      }
      case Op::kReopen: {
        auto s = loop->run(m.drv->close());
        RC_ASSERT(s.has_value());
        m.abandon();
        check_clean(*loop, m);
        RC_ASSERT(m.open({}).has_value());
        break;
      }
      case Op::kSnapCreate: {
        auto made = loop->run(create_snapshot(*m.drv, {.name = "s" + std::to_string(op.seed)}));
        // A refcount too narrow for one more sharer (1 bit: any; 2 bits: a fourth) refuses the
        // snapshot, the disk unchanged (the comparison below checks it).
        if (!made.has_value() && narrow(made.error())) break;
        RC_ASSERT(made.has_value());
        snaps.emplace_back(made->id, model);
        snapshot_taken = true;
        break;
      }
      case Op::kSnapApply: {
        if (snaps.empty()) break;
        const auto& [id, disk] = snaps[op.seed % snaps.size()];
        auto st = loop->run(apply_snapshot(*m.drv, id));
        if (!st.has_value() && narrow(st.error())) break;  // as create: refused, unchanged
        RC_ASSERT(st.has_value());
        model = disk;
        break;
      }
      case Op::kSnapDelete: {
        if (snaps.empty()) break;
        const size_t i = op.seed % snaps.size();
        auto st = loop->run(delete_snapshot(*m.drv, snaps[i].first));
        RC_ASSERT(st.has_value());
        snaps.erase(snaps.begin() + static_cast<long>(i));
        break;
      }
    }
    check_against_model(*loop, *m.drv, model);
  }
  auto s = loop->run(m.drv->close());
  RC_ASSERT(s.has_value());
  m.abandon();
  check_clean(*loop, m);
}

}  // namespace
}  // namespace img
