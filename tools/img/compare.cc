// img compare [-f fmt] [-F fmt] [-s] [-q] [-U] FILE1 FILE2: whether two images read the same,
// walked as qemu-img 7.2's compare walks them (block status of both, reading only what may
// differ), with its words and exit codes: 0 identical, 1 different, 2 an image did not open,
// 3 a block status query failed, 4 a read failed.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "common.h"
#include "img/ops.h"
#include "mapped_image.h"

namespace imgcli {
namespace {

constexpr int kExitOpen = 2;
constexpr int kExitStatus = 3;
constexpr int kExitRead = 4;
constexpr uint64_t kBufSize = 2 << 20;  // qemu-img's IO_BUF_SIZE
constexpr uint64_t kSector = 512;

struct Side {
  const std::string& name;
  MappedImage& image;
};

// The first 512-byte sector of [0, n) that differs between a and b (or holds a non-zero byte,
// b == nullptr), counted from a's start; -1 if none. qemu-img reports sectors, not bytes.
int64_t first_mismatch(const uint8_t* a, const uint8_t* b, uint64_t n) {
  for (uint64_t i = 0; i < n; i += kSector) {
    uint64_t len = std::min(kSector, n - i);
    bool differs = b ? std::memcmp(a + i, b + i, len) != 0 : !img::is_zero(a + i, len);
    if (differs) return static_cast<int64_t>(i);
  }
  return -1;
}

class Comparer {
 public:
  Comparer(img::IoLoop& loop, bool quiet) : loop_(loop), quiet_(quiet) {
    buf1_.resize(kBufSize);
    buf2_.resize(kBufSize);
  }

  void say(const std::string& s) {
    if (!quiet_) std::printf("%s\n", s.c_str());
  }

  // Reads [off, off+n) of s into buf; false with the message printed on failure.
  bool read(Side& s, uint64_t off, uint64_t n, std::vector<uint8_t>& buf) {
    // A raw image's size counts its partial last sector whole (as QEMU's); that tail reads as
    // zeros.
    const uint64_t end = s.image.driver->size();
    const uint64_t have = off < end ? std::min(n, end - off) : 0;
    std::fill(buf.begin() + static_cast<ptrdiff_t>(have), buf.begin() + static_cast<ptrdiff_t>(n),
              0);
    if (have == 0) return true;
    auto st = loop_.run(s.image.driver->read(off, buf.data(), have));
    if (!st) {
      fail(img::strfmt("Error while reading offset %" PRIu64 " of %s: %s", off, s.name.c_str(),
                       reason(st.error()).c_str()));
      return false;
    }
    return true;
  }

  // qemu-img's check_empty_sectors: the range of s must read as zeros. Returns an exit code, or
  // -1 to go on.
  int expect_zeros(Side& s, uint64_t off, uint64_t n) {
    if (!read(s, off, n, buf1_)) return kExitRead;
    int64_t at = first_mismatch(buf1_.data(), nullptr, n);
    if (at >= 0) {
      say(img::strfmt("Content mismatch at offset %" PRIu64 "!", off + at));
      return kExitError;
    }
    return -1;
  }

  int compare(Side& a, Side& b, bool strict) {
    const uint64_t size1 = a.image.mapper->size(), size2 = b.image.mapper->size();
    const uint64_t common = std::min(size1, size2);
    if (strict && size1 != size2) {
      say("Strict mode: Image size mismatch!");
      return kExitError;
    }
    uint64_t off = 0;
    while (off < common) {
      auto s1 = loop_.run(a.image.mapper->status(off, size1 - off));
      if (!s1) return status_failed(a);
      auto s2 = loop_.run(b.image.mapper->status(off, size2 - off));
      if (!s2) return status_failed(b);
      uint64_t chunk = std::min(s1->length, s2->length);
      if (strict && !same_flags(*s1, *s2)) {
        say(img::strfmt("Strict mode: Offset %" PRIu64 " block status mismatch!", off));
        return kExitError;
      }
      if (s1->zero && s2->zero) {
        // Both read as zeros: nothing to read.
      } else if (s1->allocated == s2->allocated) {
        if (s1->allocated) {
          chunk = std::min(chunk, kBufSize);
          if (!read(a, off, chunk, buf1_) || !read(b, off, chunk, buf2_)) return kExitRead;
          int64_t at = first_mismatch(buf1_.data(), buf2_.data(), chunk);
          if (at >= 0) {
            say(img::strfmt("Content mismatch at offset %" PRIu64 "!", off + at));
            return kExitError;
          }
        }
        // Neither image holds the range and neither reads zeros here: both read the same
        // (nothing), as qemu-img concludes.
      } else {
        chunk = std::min(chunk, kBufSize);
        if (int rc = expect_zeros(s1->allocated ? a : b, off, chunk); rc >= 0) return rc;
      }
      off += chunk;
    }
    if (size1 != size2) {
      say("Warning: Image size mismatch!");
      Side& over = size1 > size2 ? a : b;
      const uint64_t end = std::max(size1, size2);
      while (off < end) {
        auto st = loop_.run(over.image.mapper->status(off, end - off));
        if (!st) return status_failed(over);
        uint64_t chunk = st->length;
        if (st->allocated && !st->zero) {
          chunk = std::min(chunk, kBufSize);
          if (int rc = expect_zeros(over, off, chunk); rc >= 0) return rc;
        }
        off += chunk;
      }
    }
    say("Images are identical.");
    return kExitOk;
  }

 private:
  // qemu-img -s compares the whole block status word of both images.
  static bool same_flags(const img::ChainStatus& x, const img::ChainStatus& y) {
    return x.data == y.data && x.zero == y.zero && x.allocated == y.allocated &&
           x.offset_valid == y.offset_valid && x.eof == y.eof;
  }
  int status_failed(Side& s) {
    fail("Sector allocation test failed for " + s.name);
    return kExitStatus;
  }

  img::IoLoop& loop_;
  bool quiet_;
  std::vector<uint8_t> buf1_, buf2_;
};

}  // namespace

int run_compare(const std::vector<std::string>& args) {
  CLI::App app(
      "Check whether two images read the same. Exit code: 0 identical, 1 different, 2 an image\n"
      "did not open, 3 an allocation query failed, 4 a read failed.\n"
      "Example: img compare -f qcow2 -F raw disk.qcow2 disk.raw",
      "img compare");
  std::string fmt1, fmt2;
  std::vector<std::string> files;
  bool strict = false, quiet = false, force_share = false;
  app.add_option("-f", fmt1, "format of the first image (probed if not given)");
  app.add_option("-F", fmt2, "format of the second image (probed if not given)");
  app.add_flag("-s", strict, "strict: images of different sizes or allocation differ");
  app.add_flag("-q", quiet, "quiet: print nothing, answer with the exit code");
  app.add_flag("-U,--force-share", force_share,
               "read the images even while another process writes them");
  app.add_option("FILES", files, "FILE1 FILE2");
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (files.size() != 2) {
    fail("Expecting two image file names");
    std::fprintf(stderr, "Try '%s --help' for more information\n", program_name().c_str());
    return kExitError;
  }
  for (const std::string* f : {&fmt1, &fmt2}) {
    if (!f->empty() && !known_format(*f)) {
      fail("Unknown file format '" + *f + "'");
      return kExitOpen;
    }
  }
  auto loop = make_loop();
  if (!loop) return kExitError;
  auto image1 = open_mapped(*loop, files[0], fmt1, force_share);
  if (!image1) {
    fail(image1.error().message());
    return kExitOpen;
  }
  auto image2 = open_mapped(*loop, files[1], fmt2, force_share);
  if (!image2) {
    fail(image2.error().message());
    return kExitOpen;
  }
  Side a{files[0], *image1}, b{files[1], *image2};
  return Comparer(*loop, quiet).compare(a, b, strict);
}

}  // namespace imgcli
