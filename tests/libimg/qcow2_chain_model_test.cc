// Model test over backing chains. The image under test is the top of a chain of 1 to 3 images
// (qcow2 over qcow2 over raw or qcow2, in a MemFs); each lower layer gets random data, zeros and
// (qcow2) compressed clusters through libimg first, and has a virtual size of its own. Random
// sequences of write, write_zeroes, discard, write_compressed, resize (grow and shrink), read,
// block_status, flush and close-and-reopen run on the top; after every step its whole content is
// compared with a flat model, and block_status with what the model knows. After every reopen the
// top's own check is clean; the lower layers are never written.
//
// The model of an overlay: bytes the top never wrote read from the layer below, zeros past that
// layer's end. Discard frees whole clusters (the image's last, partial cluster counts whole);
// they read as zeros, except on version 2 over a backing file, where they read from the layer
// below again (no zero flag; QEMU's discard does the same). Space a grow adds reads as zeros even
// where the layer below has data: QEMU 7.2 writes zero clusters over it, and refuses the grow on
// version 2 (no zero clusters), which the model expects too.
//
// The default run is about a hundred chains, sized to stay well under 30 s on a loaded machine.
// Many more:
//   RC_PARAMS="max_success=5000" build/tests/libimg/libimg_tests --gtest_filter='Qcow2ChainModel.*'
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <random>
#include <sstream>
#include <vector>

#include "img/image.h"
#include "img/qcow2.h"
#include "mem_fs.h"
#include "qcow2_workload.h"
#include "test_util.h"

namespace img {
namespace {

using test::fill_pattern;
using test::MemFs;

constexpr uint64_t kMaxSize = 2 << 20;  // virtual sizes of every layer, and resize targets
constexpr uint64_t kMaxLen = 300000;    // longest write / zero / discard

struct Layer {
  bool raw = false;  // only the bottom one may be raw
  uint64_t size = 0;
  uint32_t cluster_bits = 16;
  int version = 3;
};

struct ChainOp {
  enum Kind {
    kWrite,
    kZero,
    kZeroUnmap,
    kDiscard,
    kCompressed,
    kResize,
    kRead,
    kStatus,
    kFlush,
    kReopen
  } kind;
  // Where and how much: reduced modulo the image's size when the op runs, since resize changes
  // it on the way.
  uint64_t a;
  uint64_t b;
  uint32_t seed;
};

const char* op_name(ChainOp::Kind k) {
  static const char* names[] = {"write",  "zero", "zero-unmap", "discard", "compressed",
                                "resize", "read", "status",     "flush",   "reopen"};
  return names[k];
}

void showValue(const ChainOp& op, std::ostream& os) {
  os << op_name(op.kind) << "(" << op.a << ", " << op.b << ", " << op.seed << ")";
}

// Data that compresses (runs of one byte) or does not (the workload pattern), by seed.
void fill_data(uint8_t* p, uint64_t off, uint64_t len, uint32_t seed, bool compressible) {
  if (!compressible) return fill_pattern(p, off, len, seed);
  for (uint64_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>(seed + (off + i) / 97);
}

// One generated chain and the top driver the ops run on, with the flat model of the top and of
// the layer below it. Failures say which op, after which ones, went wrong.
class ChainRun {
 public:
  ChainRun(const std::vector<Layer>& lower, const Qcow2CreateOptions& top_opts, uint64_t seed)
      : loop_(test::make_loop()), fs_(nullptr), rng_(seed) {
    top_cs_ = top_opts.cluster_size;
    top_extended_ = top_opts.extended_l2;
    version_ = top_opts.version;
    depth_ = lower.size() + 1;
    std::string below_name, below_fmt;
    for (size_t i = 0; i < lower.size(); ++i) {
      below_name = build_layer(i, lower[i], below_name);
      below_fmt = lower[i].raw ? "raw" : "qcow2";
    }
    Qcow2CreateOptions o = top_opts;
    o.backing_file = below_name;
    // A qcow2 backing file's format is sometimes left to probing.
    o.backing_format = below_fmt == "qcow2" && rng_() % 2 ? "" : below_fmt;
    ok(loop_->run(create_qcow2(fs_.create("top.qcow2"), o)), "create top");
    for (const auto& l : lower_names_) lower_bytes_.push_back(fs_.find(l.first)->bytes());
    model_ = below_;
    model_.resize(o.size, 0);
    open_top();
  }

  void run(const ChainOp& op);

  void finish() {
    close_and_check();
    for (size_t i = 0; i < lower_names_.size(); ++i) {
      if (fs_.find(lower_names_[i].first)->bytes() != lower_bytes_[i]) {
        fail(lower_names_[i].first + " was written");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) {
    RC_FAIL(msg + "\n  chain depth " + std::to_string(depth_) + ", top version " +
            std::to_string(version_) + ", cluster " + std::to_string(top_cs_) + ", below size " +
            std::to_string(below_.size()) + "\n  ops run:" + trace_.str());
  }
  template <class R>
  void ok(const R& r, const std::string& what) {
    if (!r.has_value()) fail(what + ": " + r.error().to_string());
  }

  // Creates lower layer i over `below_name` (empty: none), fills it through libimg and makes
  // below_ its flat content. Returns its name.
  std::string build_layer(size_t i, const Layer& l, const std::string& below_name);
  void open_top() {
    OpenOptions o;
    o.opener = &fs_;
    auto d = loop_->run(open_image(*loop_, "top.qcow2", o));
    ok(d, "open top");
    top_ = std::move(*d);
    size_t depth = 0;
    for (BlockDriver* b = top_.get(); b; b = b->backing()) ++depth;
    if (depth != depth_) fail("the chain opened with depth " + std::to_string(depth));
  }
  void close_and_check() {
    ok(loop_->run(top_->close()), "close");
    top_.reset();
    auto r = loop_->run(check_qcow2(*fs_.find("top.qcow2"), RepairMode::kNone));
    ok(r, "check");
    std::string msgs;
    for (auto& s : r->messages) msgs += s + "; ";
    if (r->corruptions + r->leaks + r->check_errors > 0) fail("check is not clean: " + msgs);
  }
  void check_read(uint64_t off, uint64_t len);
  void check_status(uint64_t off, uint64_t len, uint64_t* run_length);
  void check_all_status() {
    for (uint64_t off = 0, n = 0; off < model_.size(); off += n) {
      check_status(off, model_.size() - off, &n);
    }
  }
  // The bytes a freed (unallocated) range of the top reads: the layer below's, zeros past it.
  uint8_t below_at(uint64_t off) const { return off < below_.size() ? below_[off] : 0; }

  std::unique_ptr<IoLoop> loop_;
  MemFs fs_;
  std::mt19937_64 rng_;
  std::unique_ptr<BlockDriver> top_;
  uint64_t top_cs_ = 0;
  bool top_extended_ = false;  // extended L2: discard drops whole subclusters too
  int version_ = 3;
  size_t depth_ = 0;
  std::vector<uint8_t> model_;  // what the top reads
  std::vector<uint8_t> below_;  // what the layer below the top reads (empty: no backing file)
  std::vector<std::pair<std::string, bool>> lower_names_;
  std::vector<std::vector<uint8_t>> lower_bytes_;
  std::ostringstream trace_;
};

std::string ChainRun::build_layer(size_t i, const Layer& l, const std::string& below_name) {
  std::string name = "l" + std::to_string(i) + (l.raw ? ".raw" : ".qcow2");
  MemFile& f = fs_.create(name);
  if (l.raw) {
    f.bytes().resize(l.size);
  } else {
    Qcow2CreateOptions o{
        .size = l.size, .version = l.version, .cluster_size = 1u << l.cluster_bits};
    o.backing_file = below_name;
    if (!below_name.empty()) o.backing_format = lower_names_.back().second ? "raw" : "qcow2";
    ok(loop_->run(create_qcow2(f, o)), "create " + name);
  }
  lower_names_.push_back({name, l.raw});
  OpenOptions oo;
  oo.opener = &fs_;
  oo.format = l.raw ? "raw" : "qcow2";
  auto d = loop_->run(open_image(*loop_, name, oo));
  ok(d, "open " + name);
  std::vector<uint8_t> view = below_;
  view.resize(l.size, 0);
  // Mostly data (a raw bottom is written whole), some zeros, so every kind of byte lies below.
  const int writes = l.raw ? 1 : 2 + int(rng_() % 4);
  for (int w = 0; w < writes + 2; ++w) {
    uint64_t len = (l.raw && w == 0) ? l.size : 1 + rng_() % std::max<uint64_t>(1, l.size / 2);
    len = std::min(len, l.size);
    uint64_t off = rng_() % (l.size - len + 1);
    if (w < writes) {
      std::vector<uint8_t> buf(len);
      fill_pattern(buf.data(), off, len, uint32_t(rng_()));
      ok(loop_->run((*d)->write(off, buf.data(), len)), "fill " + name);
      std::copy(buf.begin(), buf.end(), view.begin() + off);
    } else {
      len = std::min<uint64_t>(len, 1 + l.size / 8);
      ok(loop_->run((*d)->write_zeroes(off, len, {})), "zero " + name);
      std::fill(view.begin() + off, view.begin() + off + len, 0);
    }
  }
  if (!l.raw) {
    // Some compressed clusters too, so reads through the chain decompress.
    const uint64_t cs = 1ull << l.cluster_bits;
    const uint64_t off = rng_() % ((l.size + cs - 1) / cs) * cs;
    const uint64_t len = std::min((1 + rng_() % 4) * cs, l.size - off);
    std::vector<uint8_t> buf(len);
    fill_data(buf.data(), off, len, uint32_t(rng_()), true);
    ok(loop_->run((*d)->write_compressed(off, buf.data(), len)), "compress " + name);
    std::copy(buf.begin(), buf.end(), view.begin() + off);
  }
  std::vector<uint8_t> back(l.size);
  ok(loop_->run((*d)->read(0, back.data(), back.size())), "read " + name);
  if (back != view) fail(name + " does not read back what was written to it");
  ok(loop_->run((*d)->close()), "close " + name);
  below_ = std::move(view);
  return name;
}

void ChainRun::check_read(uint64_t off, uint64_t len) {
  std::vector<uint8_t> back(len, 0xee);
  ok(loop_->run(top_->read(off, back.data(), len)), "read");
  auto m = std::mismatch(back.begin(), back.end(), model_.begin() + off);
  if (m.first != back.end()) {
    uint64_t at = off + (m.first - back.begin());
    fail("the image differs from the model at byte " + std::to_string(at) + ": got " +
         std::to_string(*m.first) + ", want " + std::to_string(*m.second) +
         " (below: " + std::to_string(below_at(at)) + ")");
  }
}

void ChainRun::check_status(uint64_t off, uint64_t len, uint64_t* run_length) {
  auto st = loop_->run(top_->block_status(off, len));
  ok(st, "block_status");
  const uint64_t n = st->length;
  const std::string where = " at [" + std::to_string(off) + ", +" + std::to_string(n) + ")";
  if (n == 0 || n > len) fail("block_status length " + std::to_string(n) + where);
  auto all_zero = [&] {
    return std::all_of(model_.begin() + off, model_.begin() + off + n,
                       [](uint8_t c) { return !c; });
  };
  switch (st->kind) {
    case BlockStatus::Kind::kBacking:
      if (off + n > below_.size()) fail("kBacking past the backing file's end" + where);
      if (!std::equal(model_.begin() + off, model_.begin() + off + n, below_.begin() + off)) {
        fail("kBacking where the model does not read the backing file" + where);
      }
      break;
    case BlockStatus::Kind::kUnallocated:
      if (off < below_.size()) fail("kUnallocated over the backing file" + where);
      if (!all_zero()) fail("kUnallocated over data" + where);
      break;
    case BlockStatus::Kind::kZero:
      if (!all_zero()) fail("kZero over data" + where);
      break;
    case BlockStatus::Kind::kData:
      if (st->compressed == st->host_offset.has_value()) fail("kData host offset" + where);
      break;
  }
  *run_length = n;
}

void ChainRun::run(const ChainOp& op) {
  const uint64_t size = model_.size();
  const uint64_t cs = top_cs_;
  uint64_t off = op.a % size;
  uint64_t len = std::min(op.b % kMaxLen, size - off);
  auto log = [&](uint64_t o, uint64_t l) {
    trace_ << "\n    " << op_name(op.kind) << "(" << o << ", " << l << ") size " << size;
  };
  switch (op.kind) {
    case ChainOp::kWrite: {
      log(off, len);
      std::vector<uint8_t> buf(len);
      fill_pattern(buf.data(), off, len, op.seed);
      ok(loop_->run(top_->write(off, buf.data(), len)), "write");
      std::copy(buf.begin(), buf.end(), model_.begin() + off);
      break;
    }
    case ChainOp::kZero:
    case ChainOp::kZeroUnmap:
      log(off, len);
      ok(loop_->run(top_->write_zeroes(off, len, {op.kind == ChainOp::kZeroUnmap})), "zero");
      std::fill(model_.begin() + off, model_.begin() + off + len, 0);
      break;
    case ChainOp::kDiscard: {
      log(off, len);
      ok(loop_->run(top_->discard(off, len)), "discard");
      const uint64_t unit = top_extended_ ? cs / 32 : cs;
      uint64_t first = (off + unit - 1) / unit * unit;
      uint64_t last = off + len == size ? size : (off + len) / unit * unit;
      const bool shows_below = version_ < 3;
      for (uint64_t i = first; i < last; ++i) model_[i] = shows_below ? below_at(i) : 0;
      break;
    }
    case ChainOp::kCompressed: {
      // Whole clusters from a cluster boundary; a range that reaches the end of the image may
      // end in its last, partial cluster, anywhere in its last sector (as a source whose size
      // is not a multiple of 512 does): the rest of that sector reads as zeros.
      const uint64_t clusters = (size + cs - 1) / cs;
      off = op.a % clusters * cs;
      len = std::min((1 + op.b % 8) * cs, size - off);
      uint64_t cut = 0;
      if (off + len == size && len % cs != 0 && op.seed % 4 == 0) {
        cut = std::min<uint64_t>(len - 1, (op.seed >> 2) % 512);
        len -= cut;
      }
      log(off, len);
      std::vector<uint8_t> buf(len);
      fill_data(buf.data(), off, len, op.seed, op.seed % 3 != 0);
      ok(loop_->run(top_->write_compressed(off, buf.data(), len)), "write_compressed");
      std::copy(buf.begin(), buf.end(), model_.begin() + off);
      std::fill(model_.begin() + off + len, model_.begin() + off + len + cut, 0);
      break;
    }
    case ChainOp::kResize: {
      const uint64_t new_size = 512 * (1 + op.a % (kMaxSize / 512));
      ResizeOptions ro{.allow_shrink = true};
      static const Preallocation modes[] = {Preallocation::kOff,    Preallocation::kOff,
                                            Preallocation::kOff,    Preallocation::kMetadata,
                                            Preallocation::kFalloc, Preallocation::kFull};
      if (new_size > size) ro.preallocation = modes[op.seed % 6];
      log(new_size, static_cast<uint64_t>(ro.preallocation));
      auto s = loop_->run(top_->resize(new_size, ro));
      const uint64_t size_up = (size + top_cs_ - 1) / top_cs_ * top_cs_;
      if (version_ < 3 && new_size > size_up && below_.size() > size) {
        // The grown part past the old last cluster would have to hide the backing data with
        // zero clusters (v3 only); within that cluster it is written as zeros, as QEMU does.
        if (s.has_value() || s.error().code() != ErrorCode::kNotSupported) {
          fail("a version 2 grow over a larger backing file must be refused");
        }
        if (top_->size() != size) fail("a refused resize changed the size");
        break;
      }
      ok(s, "resize");
      if (top_->size() != new_size) fail("resize left size " + std::to_string(top_->size()));
      model_.resize(new_size, 0);
      break;
    }
    case ChainOp::kRead:
      log(off, len);
      check_read(off, len);
      break;
    case ChainOp::kStatus: {
      log(off, len + 1);
      uint64_t n;
      check_status(off, std::min(len + 1, size - off), &n);
      break;
    }
    case ChainOp::kFlush:
      log(0, 0);
      ok(loop_->run(top_->flush()), "flush");
      break;
    case ChainOp::kReopen:
      log(0, 0);
      close_and_check();
      open_top();
      if (top_->size() != model_.size()) fail("reopened with size " + std::to_string(top_->size()));
      break;
  }
  check_read(0, model_.size());
  check_all_status();
}

RC_GTEST_PROP(Qcow2ChainModel, RandomOpsOnAChainMatchTheModel, ()) {
  // Chain depth 1 to 3, mostly with a backing file (qcow2_model_test covers lone images).
  const size_t lower_count = *rc::gen::weightedElement<size_t>({{1, 0}, {2, 1}, {2, 2}});
  std::vector<Layer> lower(lower_count);
  for (size_t i = 0; i < lower_count; ++i) {
    Layer& l = lower[i];
    l.raw = i == 0 && *rc::gen::arbitrary<bool>();
    // A raw file may end anywhere; qcow2 sizes are whole 512-byte sectors.
    l.size = *rc::gen::inRange<uint64_t>(1, kMaxSize + 1);
    if (!l.raw) l.size = (l.size + 511) / 512 * 512;
    l.cluster_bits = *rc::gen::inRange<uint32_t>(9, 17);
    l.version = *rc::gen::element(2, 3);
  }
  const uint32_t cluster_bits = *rc::gen::inRange<uint32_t>(9, 17);  // 512 B .. 64 KiB
  const int version = *rc::gen::element(2, 3);
  const uint32_t refcount_bits =
      version == 2 ? 16 : *rc::gen::element<uint32_t>(1, 2, 4, 8, 16, 32, 64);
  const bool lazy = version == 3 && *rc::gen::arbitrary<bool>();
  const bool zstd = version == 3 && *rc::gen::arbitrary<bool>();
  const uint64_t size = (*rc::gen::inRange<uint64_t>(1, kMaxSize) + 511) / 512 * 512;
  // Extended L2 (subclusters) where QEMU allows it: version 3, clusters of 16 KiB or more.
  const bool extended = version == 3 && cluster_bits >= 14 && *rc::gen::arbitrary<bool>();
  const uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  RC_TAG(lower_count, version, extended);

  auto gen_op = rc::gen::apply(
      [](int kind, uint64_t a, uint64_t b, uint32_t s) {
        return ChainOp{static_cast<ChainOp::Kind>(kind), a, b, s};
      },
      rc::gen::weightedElement<int>({{8, ChainOp::kWrite},
                                     {2, ChainOp::kZero},
                                     {2, ChainOp::kZeroUnmap},
                                     {2, ChainOp::kDiscard},
                                     {3, ChainOp::kCompressed},
                                     {2, ChainOp::kResize},
                                     {1, ChainOp::kRead},
                                     {1, ChainOp::kStatus},
                                     {1, ChainOp::kFlush},
                                     {1, ChainOp::kReopen}}),
      rc::gen::arbitrary<uint64_t>(), rc::gen::arbitrary<uint64_t>(),
      rc::gen::arbitrary<uint32_t>());
  const auto ops = *rc::gen::resize(40, rc::gen::container<std::vector<ChainOp>>(gen_op));

  ChainRun run(lower,
               {.size = size,
                .version = version,
                .cluster_size = 1u << cluster_bits,
                .refcount_bits = refcount_bits,
                .lazy_refcounts = lazy,
                .compression_type = zstd ? "zstd" : "zlib",
                .extended_l2 = extended},
               seed);
  for (const ChainOp& op : ops) run.run(op);
  run.finish();
}

}  // namespace
}  // namespace img
