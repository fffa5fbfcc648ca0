// img dd [-f fmt] [-O fmt] [bs=BYTES] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT: copies
// blocks of INPUT (read through its format and chain) into a new image OUTPUT, as qemu-img 7.2's
// dd does, including its sizing: with count, the input counts as count*bs bytes long, and the
// output holds what lies past skip*bs of that.
#include <cstdio>
#include <optional>

#include "common.h"
#include "img/image.h"
#include "img/ops.h"
#include "img/qcow2.h"

namespace imgcli {
namespace {

// Bytes moved per read/write: a huge bs= (qemu-img takes up to 2 GiB) is copied in pieces, so
// memory stays bounded; the bytes written are the same.
constexpr uint64_t kPiece = 4 << 20;

struct DdArgs {
  uint64_t bs = 512;
  std::optional<uint64_t> count, skip;
  std::string in, out;
};

// Parses the key=value operands in order, as qemu-img does; prints the error and returns false.
bool parse_operands(const std::vector<std::string>& ops, DdArgs& a) {
  for (const std::string& op : ops) {
    size_t eq = op.find('=');
    std::string key = op.substr(0, eq);
    if (eq == std::string::npos) {
      fail("unrecognized operand " + op);
      return false;
    }
    std::string value = op.substr(eq + 1);
    if (key == "bs") {
      auto v = cvtnum("bs", value, 1, INT32_MAX);
      if (!v) return false;
      a.bs = *v;
    } else if (key == "count") {
      if (!(a.count = cvtnum("count", value))) return false;
    } else if (key == "skip") {
      if (!(a.skip = cvtnum("skip", value))) return false;
    } else if (key == "if") {
      a.in = value;
    } else if (key == "of") {
      a.out = value;
    } else {
      fail("unrecognized operand " + key);
      return false;
    }
  }
  return true;
}

}  // namespace

int run_dd(const std::vector<std::string>& args) {
  CLI::App app(
      "Copy blocks of an image into a new image, as dd(1) does\n"
      "Example: img dd -O qcow2 bs=1M count=64 skip=16 if=disk.raw of=part.qcow2",
      "img dd");
  std::string in_fmt, out_fmt = "raw";
  std::vector<std::string> operands;
  bool force_share = false;
  app.add_option("-f", in_fmt, "the input's format (probed if not given)");
  app.add_option("-O", out_fmt, "the output's format: raw (default) or qcow2");
  app.add_flag("-U,--force-share", force_share,
               "read the input even while another process writes it");
  app.add_option("OPERANDS", operands, "bs=BYTES (512) count=BLOCKS skip=BLOCKS if=IN of=OUT");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  DdArgs a;
  if (!parse_operands(operands, a)) return kExitError;
  if (a.in.empty() || a.out.empty()) return fail("Must specify both input and output files");
  if (!in_fmt.empty() && !known_format(in_fmt)) return fail("Unknown file format '" + in_fmt + "'");
  if (!known_format(out_fmt)) return fail("Unknown file format '" + out_fmt + "'");

  auto loop = make_loop();
  if (!loop) return kExitError;
  auto src = loop->run(img::open_image(
      *loop, a.in, {.format = in_fmt, .read_only = true, .force_share = force_share}));
  if (!src) return fail(open_error(a.in, src.error()));
  uint64_t size = (*src)->size();
  if (a.count && *a.count <= INT64_MAX / a.bs && *a.count * a.bs < size) size = *a.count * a.bs;
  // A skip past the end gives an empty output, with a warning (like dd(1)).
  const bool skip_past_end = a.skip && (*a.skip > INT64_MAX / a.bs || size < *a.skip * a.bs);
  const uint64_t from = a.skip && !skip_past_end ? *a.skip * a.bs : 0;
  const uint64_t out_size = skip_past_end ? 0 : size - from;

  img::Qcow2CreateOptions create_opts;
  create_opts.size = out_size;
  auto created = loop->run(img::create_image(*loop, a.out, out_fmt, out_size, create_opts));
  if (!created) {
    return fail(a.out + ": error while creating output image: Could not create '" + a.out +
                "': " + reason(created.error()));
  }
  auto dst = loop->run(img::open_image(*loop, a.out, {.format = out_fmt}));
  if (!dst) return fail(open_error(a.out, dst.error()));
  if (skip_past_end) fail(a.in + ": cannot skip to specified offset");

  std::vector<uint8_t> buf(std::min<uint64_t>(a.bs, kPiece));
  for (uint64_t in_pos = skip_past_end ? size : from, out_pos = 0; in_pos < size;) {
    uint64_t n = std::min<uint64_t>(buf.size(), size - in_pos);
    auto rd = loop->run((*src)->read(in_pos, buf.data(), n));
    if (!rd) return fail("error while reading from input image file: " + reason(rd.error()));
    auto wr = loop->run((*dst)->write(out_pos, buf.data(), n));
    if (!wr) return fail("error while writing to output image file: " + reason(wr.error()));
    in_pos += n;
    out_pos += n;
  }
  auto closed = loop->run((*dst)->close());
  if (!closed) return fail(a.out + ": " + reason(closed.error()));
  (void)loop->run((*src)->close());
  return kExitOk;
}

}  // namespace imgcli
