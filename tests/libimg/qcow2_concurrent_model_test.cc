// Model test with many requests in flight: RapidCheck generates batches of concurrent requests
// (writes, write_zeroes with and without unmap, discards, flushes, some sharing clusters) over
// random cluster sizes, refcount widths, versions, lazy_refcounts and an optional backing file.
// Each batch is spawned at once on the loop (FaultFile yields on every operation) and drained;
// the image must then read as some interleaving of the batch allows (qcow2_concurrent.h: for
// bytes that overlapping requests of the batch touched, any value that no later-issued request
// overwrote). What was read becomes the model for the next batch, and after a close and reopen
// (at random points) the image reads exactly as the model and check is clean, leaks included.
// Some images keep their data in an external data file, some of those as a raw image (which
// must then read as the disk does after every batch).
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <random>
#include <vector>

#include "img/image.h"
#include "qcow2_concurrent.h"
#include "test_util.h"

namespace img {
namespace {

constexpr const char* kOverlay = "ov.qcow2";

std::vector<uint8_t> read_all(IoLoop& loop, BlockDriver& d) {
  std::vector<uint8_t> back(d.size());
  auto r = loop.run(d.read(0, back.data(), back.size()));
  RC_ASSERT(r.has_value());
  return back;
}

void check_clean(IoLoop& loop, FaultFile& f) {
  auto r = loop.run(check_qcow2(f, RepairMode::kNone));
  RC_ASSERT(r.has_value());
  std::string msgs;
  for (size_t i = 0; i < r->messages.size() && i < 10; ++i) msgs += r->messages[i] + "; ";
  if (r->corruptions + r->leaks + r->check_errors > 0) RC_FAIL("check is not clean: " + msgs);
}

RC_GTEST_PROP(Qcow2ConcurrentModel, BatchesOfConcurrentOpsMatchSomeInterleaving, ()) {
  const uint32_t cluster_bits = *rc::gen::element<uint32_t>(9, 10, 12, 16);
  const int version = *rc::gen::element(2, 3);
  const uint32_t refcount_bits =
      version == 2 ? 16 : *rc::gen::element<uint32_t>(1, 2, 4, 8, 16, 32, 64);
  const bool lazy = version == 3 && *rc::gen::arbitrary<bool>();
  // libimg's v3 header (feature name table, backing format, name) does not fit one 512-byte
  // cluster; qemu-img drops the feature name table there instead (see the report).
  const bool backing = (version == 2 || cluster_bits > 9) && *rc::gen::arbitrary<bool>();
  const uint64_t cs = 1ull << cluster_bits;
  // A few L2 tables' worth for small clusters, a few dozen clusters for big ones.
  const uint64_t size =
      *rc::gen::inRange<uint64_t>(8, 48) * std::max<uint64_t>(cs, 8192) / 512 * 512;
  const uint64_t l2_cache = *rc::gen::element<uint64_t>(0, 4 * cs);
  // 0: data in the image; 1: an external data file; 2: one kept a raw image (no backing file).
  const int data_file = version == 3 ? *rc::gen::element(0, 0, 1, 2) : 0;
  const bool raw_data = data_file == 2 && !backing;
  RC_TAG(cluster_bits, version, refcount_bits, lazy, backing, data_file);

  auto loop = test::make_loop();
  test::OverlayFs fs(*loop, kOverlay);
  Qcow2CreateOptions o{.size = size,
                       .version = version,
                       .cluster_size = uint32_t(cs),
                       .refcount_bits = refcount_bits,
                       .lazy_refcounts = lazy};
  std::vector<uint8_t> base;
  if (backing) {
    // Ends inside a cluster, so copy-on-write meets the backing file's end.
    base.resize(size - cs / 2 - 100);
    test::fill_pattern(base.data(), 0, base.size(), 0xba5e);
    fs.fs().create("base.raw").bytes() = base;
    o.backing_file = "base.raw";
    o.backing_format = "raw";
  }
  if (data_file) {
    fs.fs().create("data.raw");
    o.data_file = "data.raw";
    o.data_file_raw = raw_data;
    if (raw_data) o.preallocation = Preallocation::kMetadata;
  }
  RC_ASSERT(loop->run(create_qcow2(fs.overlay(), o)).has_value());
  // A raw data file reads as the disk: the first size bytes (it may be shorter: zeros).
  auto raw_view = [&] {
    std::vector<uint8_t> v = fs.fs().find("data.raw")->bytes();
    v.resize(size, 0);
    return v;
  };
  std::unique_ptr<BlockDriver> drv;
  auto open = [&] {
    auto d = loop->run(
        open_image(*loop, kOverlay,
                   {.l2_cache_size = l2_cache, .refcount_cache_size = l2_cache, .opener = &fs}));
    RC_ASSERT(d.has_value());
    drv = std::move(*d);
  };
  open();
  std::vector<uint8_t> model(size, 0);
  std::copy(base.begin(), base.end(), model.begin());

  const auto batches = *rc::gen::container<std::vector<std::pair<uint64_t, bool>>>(
      rc::gen::pair(rc::gen::arbitrary<uint64_t>(), rc::gen::arbitrary<bool>()));
  size_t max_in_flight = 0;
  for (const auto& [seed, reopen] : batches) {
    std::mt19937_64 rng(seed);
    auto reqs = test::make_batch(rng, size, cs, 24 + rng() % 32, int(rng() % 24), 2);
    max_in_flight = std::max(max_in_flight, test::run_concurrently(*loop, *drv, reqs));
    for (const test::Req& r : reqs) {
      if (!r.ok()) RC_FAIL("request failed: " + test::describe(r));
    }
    std::vector<uint8_t> got = read_all(*loop, *drv);
    std::string bad = test::Acceptor(model, base, cs).check(reqs, got, /*durable_only=*/false);
    if (!bad.empty()) RC_FAIL(bad);
    if (raw_data && raw_view() != got) {
      const int64_t at = test::first_difference(raw_view(), got);
      std::string touched;
      for (const test::Req& r : reqs) {
        if (r.op.kind != test::WorkOp::kFlush && r.op.off <= uint64_t(at) &&
            uint64_t(at) < r.op.off + r.op.len) {
          touched += "; " + test::describe(r);
        }
      }
      RC_FAIL("the raw data file does not read as the disk at byte " + std::to_string(at) +
              " (size " + std::to_string(size) + ", cluster " + std::to_string(cs) + ")" + touched);
    }
    model = std::move(got);
    if (reopen) {
      RC_ASSERT(loop->run(drv->close()).has_value());
      drv.reset();
      check_clean(*loop, fs.overlay());
      open();
      if (read_all(*loop, *drv) != model) RC_FAIL("the image changed across close and reopen");
    }
  }
  RC_ASSERT(loop->run(drv->close()).has_value());
  drv.reset();
  check_clean(*loop, fs.overlay());
  if (!batches.empty()) RC_TAG(max_in_flight >= 16 ? "16+ in flight" : "fewer in flight");
}

}  // namespace
}  // namespace img
