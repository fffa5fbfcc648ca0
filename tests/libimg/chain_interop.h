// Helpers for the backing-chain interop tests: chains built on real files by qemu-img and
// qemu-io, the guest-visible bytes as qemu-img and libimg read them, and a map of a chain
// (which layer holds each range) as libimg's block_status gives it, in qemu-img map's terms.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "img/image.h"
#include "qemu_tools.h"
#include "test_util.h"

namespace img::test {

inline std::vector<uint8_t> read_host_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Runs a qemu tool command that must succeed; its output, or "" after a test failure.
inline std::string qemu_ok(const std::string& cmd) {
  ToolResult r = run_tool(cmd);
  EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  return r.exit_code == 0 ? r.output : "";
}

// `qemu-img check` finds nothing at all: exit 0, no corruptions, leaks or check errors.
inline void expect_qemu_check_clean(const std::string& path) {
  ToolResult r = run_tool("qemu-img check --output=json " + shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << path << "\n" << r.output;
  EXPECT_EQ(json_count(r.output, "corruptions"), 0u) << r.output;
  EXPECT_EQ(json_count(r.output, "leaks"), 0u) << r.output;
  EXPECT_EQ(json_count(r.output, "check-errors"), 0u) << r.output;
}

// The guest-visible bytes of an image and its chain as qemu-img reads them.
inline std::vector<uint8_t> qemu_flat(const std::string& path, const std::string& scratch) {
  qemu_ok("qemu-img convert -O raw " + shell_quote(path) + " " + shell_quote(scratch));
  auto out = read_host_file(scratch);
  std::filesystem::remove(scratch);
  return out;
}

// The guest-visible bytes of an image and its chain as libimg reads them.
inline std::vector<uint8_t> libimg_flat(IoLoop& loop, const std::string& path) {
  auto d = loop.run(open_image(loop, path, {.read_only = true}));
  EXPECT_TRUE(d.has_value()) << path << ": " << d.error().to_string();
  if (!d) return {};
  std::vector<uint8_t> out((*d)->size());
  auto s = loop.run((*d)->read(0, out.data(), out.size()));
  EXPECT_TRUE(s.has_value()) << s.error().to_string();
  (void)loop.run((*d)->close());
  return out;
}

inline int64_t first_byte_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<int64_t>(n);
}

#define EXPECT_SAME_BYTES(got, want, who)                                                    \
  do {                                                                                       \
    const auto& g_ = (got);                                                                  \
    const auto& w_ = (want);                                                                 \
    EXPECT_EQ(g_.size(), w_.size()) << who;                                                  \
    int64_t d_ = ::img::test::first_byte_difference(g_, w_);                                 \
    EXPECT_EQ(d_, -1) << who << ": first difference at byte " << d_ << " (got "              \
                      << (d_ >= 0 && size_t(d_) < g_.size() ? int(g_[d_]) : -1) << ", want " \
                      << (d_ >= 0 && size_t(d_) < w_.size() ? int(w_[d_]) : -1) << ")";      \
  } while (0)

// One image of a chain, as qemu-img creates it.
struct LayerSpec {
  std::string path;  // relative to the test folder ("a/base.qcow2")
  std::string fmt;   // "raw" or "qcow2"
  uint64_t size;
  unsigned cluster_bits = 16;  // qcow2 only
  std::string compat = "1.1";  // qcow2 only: "0.10" (version 2) or "1.1" (version 3)
  bool extended_l2 = false;    // qcow2 only: 32 subclusters a cluster (cluster_bits >= 14)
};

// qemu-img create's -o for a qcow2 layer.
inline std::string qcow2_opts(const LayerSpec& l) {
  return "-o cluster_size=" + std::to_string(1ull << l.cluster_bits) + ",compat=" + l.compat +
         (l.extended_l2 ? ",extended_l2=on" : "");
}

// Creates layers[i] with layers[i-1] as its backing file, named relative to layers[i]'s folder
// (as users write them); layers[0] has none.
inline void qemu_create_layer(const std::filesystem::path& dir,
                              const std::vector<LayerSpec>& layers, size_t i) {
  const LayerSpec& l = layers[i];
  std::filesystem::path p = dir / l.path;
  std::filesystem::create_directories(p.parent_path());
  std::string cmd = "qemu-img create -q -f " + l.fmt + " ";
  if (l.fmt == "qcow2") cmd += qcow2_opts(l) + " ";
  if (i > 0) {
    std::string rel = std::filesystem::relative(dir / layers[i - 1].path, p.parent_path());
    cmd += "-b " + shell_quote(rel) + " -F " + layers[i - 1].fmt + " ";
  }
  qemu_ok(cmd + shell_quote(p.string()) + " " + std::to_string(l.size));
}

// A random batch of qemu-io commands for an image of `size` bytes with `cluster` byte clusters:
// pattern writes (unaligned ones and ones that cross clusters), zero writes and discards.
inline std::vector<std::string> random_qemu_io_ops(std::mt19937_64& rng, uint64_t size,
                                                   uint64_t cluster, unsigned first_pattern,
                                                   int count) {
  std::vector<std::string> ops;
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  for (int i = 0; i < count; ++i) {
    int kind = static_cast<int>(pick(10));
    bool aligned = kind >= 2;  // zero writes and discards in 512-byte units
    uint64_t unit = aligned ? 512 : 1;
    uint64_t off = pick(size / unit) * unit;
    uint64_t max_len = std::min<uint64_t>(size - off, 3 * cluster + 4096);
    uint64_t len = std::max<uint64_t>(unit, (1 + pick(max_len / unit)) * unit);
    if (off + len > size) continue;
    std::string range = std::to_string(off) + " " + std::to_string(len);
    if (kind < 7) {
      char pat[8];
      snprintf(pat, sizeof pat, "0x%02x", (first_pattern + i) & 0xff);
      ops.push_back(std::string("write -P ") + pat + " " + range);
    } else if (kind < 9) {
      ops.push_back("write -z " + range);
    } else {
      ops.push_back("discard " + range);
    }
  }
  return ops;
}

inline void qemu_io(const std::string& fmt, const std::string& path,
                    const std::vector<std::string>& ops) {
  std::string cmd = "qemu-io -f " + fmt;
  for (const auto& op : ops) cmd += " -c " + shell_quote(op);
  ToolResult r = run_tool(cmd + " " + shell_quote(path));
  EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  EXPECT_EQ(r.output.find("failed"), std::string::npos) << cmd << "\n" << r.output;
}

// One extent of a chain's map, in qemu-img map --output=json's terms.
struct MapExtent {
  uint64_t start = 0, length = 0;
  unsigned depth = 0;
  bool present = false, zero = false, data = false;
  std::optional<uint64_t> offset;  // in the file of the layer at `depth`
  std::string format;              // libimg's: the format of the layer at `depth`
};

inline std::string describe(const MapExtent& e) {
  return "{start " + std::to_string(e.start) + " length " + std::to_string(e.length) + " depth " +
         std::to_string(e.depth) + " present " + std::to_string(e.present) + " zero " +
         std::to_string(e.zero) + " data " + std::to_string(e.data) + " offset " +
         (e.offset ? std::to_string(*e.offset) : "-") + "}";
}

// Parses qemu-img map --output=json: one object a line.
inline std::vector<MapExtent> parse_qemu_map(const std::string& json) {
  std::vector<MapExtent> out;
  size_t pos = 0;
  while ((pos = json.find('{', pos)) != std::string::npos) {
    size_t end = json.find('}', pos);
    std::string obj = json.substr(pos, end - pos + 1);
    MapExtent e;
    e.start = std::stoull(json_field(obj, "start"));
    e.length = std::stoull(json_field(obj, "length"));
    e.depth = static_cast<unsigned>(std::stoul(json_field(obj, "depth")));
    e.present = json_field(obj, "present") == "true";
    e.zero = json_field(obj, "zero") == "true";
    e.data = json_field(obj, "data") == "true";
    std::string off = json_field(obj, "offset");
    if (!off.empty()) e.offset = std::stoull(off);
    out.push_back(e);
    pos = end;
  }
  return out;
}

// The extent at off of the chain under top, following kBacking down the chain as qemu-img map
// does: the layer that holds the range, or the one whose backing file ends before it.
inline Task<Result<MapExtent>> chain_extent(BlockDriver& top, uint64_t off, uint64_t len) {
  BlockDriver* d = &top;
  MapExtent e;
  e.start = off;
  for (;;) {
    CO_ASSIGN_OR_RETURN(BlockStatus st, co_await d->block_status(off, len));
    len = st.length;
    if (st.kind == BlockStatus::Kind::kBacking) {
      if (d->backing() == nullptr) co_return invalid_argument("kBacking without a backing image");
      d = d->backing();
      ++e.depth;
      continue;
    }
    e.length = len;
    e.format = d->format_name();
    e.present = st.kind != BlockStatus::Kind::kUnallocated;
    e.zero = st.reads_as_zero();
    e.data = st.kind == BlockStatus::Kind::kData;
    e.offset = st.host_offset;
    co_return e;
  }
}

// libimg's block_status, followed down the chain, says what `qemu-img map --output=json` says
// about every range of the image at path: which layer holds it, and whether it is data, zeros
// or nothing at all.
inline void expect_map_agrees_with_qemu(IoLoop& loop, const std::string& path) {
  auto qemu = parse_qemu_map(qemu_ok("qemu-img map --output=json " + shell_quote(path)));
  ASSERT_FALSE(qemu.empty());
  auto d = loop.run(open_image(loop, path, {.read_only = true}));
  ASSERT_TRUE(d.has_value()) << d.error().to_string();
  uint64_t expect_start = 0;
  for (const MapExtent& q : qemu) {
    ASSERT_EQ(q.start, expect_start) << "qemu-img map skips a range";
    expect_start = q.start + q.length;
    // libimg may split qemu's extent (it merges less), never disagree inside it.
    for (uint64_t off = q.start; off < q.start + q.length;) {
      auto e = loop.run(chain_extent(**d, off, q.start + q.length - off));
      ASSERT_TRUE(e.has_value()) << e.error().to_string();
      std::string why = path + ": qemu " + describe(q) + " libimg " + describe(*e);
      EXPECT_EQ(e->depth, q.depth) << why;
      EXPECT_EQ(e->present, q.present) << why;
      // A raw file's holes are zeros on both sides (SEEK_DATA / SEEK_HOLE on the host file).
      EXPECT_EQ(e->zero, q.zero) << why;
      EXPECT_EQ(e->data, q.data) << why;
      if (q.offset && e->data) {
        EXPECT_EQ(e->offset, *q.offset + (off - q.start)) << why;
      }
      ASSERT_GT(e->length, 0u);
      off += e->length;
    }
  }
  EXPECT_EQ(expect_start, (*d)->size());
  (void)loop.run((*d)->close());
}

}  // namespace img::test
