// blk_bench: drives the virtio-blk device model the way a guest driver does (guest RAM in an
// mmap'd buffer, the avail ring kept full at queue depth 32, completions taken from the used ring
// on the MSI-X irqfd with EVENT_IDX), on a raw file and on a fully allocated qcow2 image opened
// with O_DIRECT, and runs fio (io_uring, O_DIRECT, same pattern) for comparison:
// 4 KiB random reads, 4 KiB random writes, 1 MiB sequential reads.
//
//   blk_bench [--dir DIR] [--size-mib N] [--runtime S] [--repeat N] [--skip-fio]
//             [--allow-page-cache]
//
// Each row runs the device and fio alternately --repeat times (default 3), dropping the page
// cache before each run when /proc/sys/vm/drop_caches is writable, and prints the median of each
// column (every run goes to stderr). The device must open its image with O_DIRECT: the bench
// checks the descriptor's flags in /proc/self/fdinfo and exits 1 otherwise, unless
// --allow-page-cache lets it fall back to the page cache (the row is then marked).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "virtio/blk/blk_pci.h"
#include "virtio/blk/blk_spec.h"
#include "virtio_test_util.h"
#include "bench/o_direct_check.h"

using namespace vmm;
using namespace vmm::testing;
namespace vb = vmm::virtio::blk;

namespace {

constexpr unsigned kDepth = 32;
constexpr uint16_t kQueueSize = 128;
constexpr uint64_t kData = 0x1000000;  // slot i's buffer at kData + i MiB

struct Pattern {
  const char* name;
  const char* fio_rw;
  bool write;
  bool random;
  uint32_t bs;
};
constexpr Pattern kPatterns[] = {
    {"4k randread", "randread", false, true, 4096},
    {"4k randwrite", "randwrite", true, true, 4096},
    {"1M seqread", "read", false, false, 1 << 20},
};

bool g_allow_page_cache = false;


void drop_caches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  if (f) f << "3\n";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Result {
  double iops = 0;
  double mibps = 0;
};

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

int run(const std::string& cmd) { return std::system(cmd.c_str()); }

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// The first number after "key" following section (fio's JSON: "read" : { ... "iops" : x }).
double json_number(const std::string& js, const std::string& section, const std::string& key) {
  size_t s = js.find("\"" + section + "\" : {");
  if (s == std::string::npos) return 0;
  size_t k = js.find("\"" + key + "\" : ", s);
  if (k == std::string::npos) return 0;
  return std::strtod(js.c_str() + k + key.size() + 5, nullptr);
}

Result run_fio(const std::string& file, const Pattern& p, int runtime) {
  std::ostringstream cmd;
  cmd << "fio --name=x --filename=" << file << " --direct=1 --ioengine=io_uring --rw=" << p.fio_rw
      << " --bs=" << p.bs << " --iodepth=" << kDepth << " --runtime=" << runtime
      << " --time_based --output-format=json 2>/dev/null";
  std::string js = capture(cmd.str());
  const char* sec = p.write ? "write" : "read";
  Result r;
  r.iops = json_number(js, sec, "iops");
  r.mibps = json_number(js, sec, "bw_bytes") / (1 << 20);
  return r;
}

// One device run: QD kDepth for runtime seconds.
Result run_device(const std::string& file, const std::string& format, const Pattern& p, int runtime,
                  long* rss_delta, bool* direct) {
  GuestRam ram(kData + kDepth * (1ull << 20));
  std::memset(ram.at(0), 0, ram.size());  // touch guest RAM so RSS deltas are the device's
  long rss0 = rss_kib();
  FakeIrq irq;
  FakeIoEvents io;
  Bus mmio;
  PciBus pci(mmio, 0xc0000000, 0xfec00000);
  BlkConfig cfg{.path = file, .format = format, .serial = "bench"};
  cfg.direct = *direct;
  auto dev = make_virtio_blk_pci(cfg, ram.mem(), irq, io);
  if (!dev && cfg.direct && g_allow_page_cache) {
    // A driver that cannot open with O_DIRECT yet: measure through the page cache, and say so.
    std::fprintf(stderr, "blk_bench: %s: O_DIRECT open failed (%s); using the page cache\n",
                 format.c_str(), dev.error().to_string().c_str());
    cfg.direct = *direct = false;
    dev = make_virtio_blk_pci(cfg, ram.mem(), irq, io);
  }
  if (!dev) {
    std::fprintf(stderr, "blk_bench: %s\n", dev.error().to_string().c_str());
    std::exit(1);
  }
  if (cfg.direct && bench::file_opened_direct(file) != 1) {
    std::fprintf(stderr, "blk_bench: %s is not open with O_DIRECT\n", file.c_str());
    std::exit(1);
  }
  if (!pci.add_device(*dev)) std::exit(1);
  PciDriver drv(pci, mmio, 1);
  VirtioGuest g(ram, drv);
  if (g.init(1, kQueueSize) != 0xf) {
    std::fprintf(stderr, "blk_bench: device did not reach DRIVER_OK\n");
    std::exit(1);
  }
  int irqfd = -1;
  for (auto& [gsi, r] : irq.routes) {
    if (r.data == VirtioGuest::kMsiData) irqfd = r.fd;
  }
  uint64_t capacity = drv.mmio_read(g.bar() + 0x2000, 8) * 512;  // config space: capacity
  uint64_t blocks = capacity / p.bs;
  std::mt19937_64 rng(42);
  uint64_t seq = 0;
  auto next_sector = [&] {
    uint64_t b = p.random ? rng() % blocks : (seq++ % blocks);
    return b * (p.bs / 512);
  };
  // Fixed descriptors per slot: 3 * slot .. 3 * slot + 2.
  auto submit = [&](unsigned slot) {
    uint64_t h = VirtioGuest::kReqBase + slot * 32ull;
    ram.put<uint32_t>(h, p.write ? vb::kTOut : vb::kTIn);
    ram.put<uint32_t>(h + 4, 0);
    ram.put<uint64_t>(h + 8, next_sector());
    uint16_t d = static_cast<uint16_t>(slot * 3);
    g.write_desc(0, d, h, 16, virtio::kDescFNext, d + 1);
    g.write_desc(0, d + 1, kData + slot * (1ull << 20), p.bs,
                 virtio::kDescFNext | (p.write ? 0 : virtio::kDescFWrite), d + 2);
    g.write_desc(0, d + 2, h + 16, 1, virtio::kDescFWrite, 0);
    g.make_available(0, d);
  };
  uint16_t* used_event = reinterpret_cast<uint16_t*>(ram.at(g.avail_gpa(0) + 4 + 2 * kQueueSize));
  for (unsigned i = 0; i < kDepth; ++i) submit(i);
  g.notify(0);
  uint64_t done = 0, errors = 0;
  uint16_t seen = 0;
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::seconds(runtime);
  bool draining = false;
  unsigned outstanding = kDepth;
  while (outstanding > 0) {
    pollfd pfd{irqfd, POLLIN, 0};
    poll(&pfd, 1, 100);
    uint64_t v;
    (void)!read(irqfd, &v, 8);
    if (!draining && std::chrono::steady_clock::now() >= deadline) draining = true;
    bool posted = false;
    while (true) {
      uint16_t u = g.used_idx(0);
      while (seen != u) {
        auto [id, len] = g.used_elem(0, seen);
        ++seen;
        unsigned slot = id / 3;
        if (g.blk_status(slot) != vb::kSOk) ++errors;
        ++done;
        if (draining) {
          --outstanding;
        } else {
          submit(slot);
          posted = true;
        }
      }
      // Ask for an interrupt at the next completion (virtqueue_enable_cb), then re-check.
      __atomic_store_n(used_event, seen, __ATOMIC_SEQ_CST);
      if (g.used_idx(0) == seen) break;
    }
    if (posted) g.notify(0);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *rss_delta = rss_kib() - rss0;
  if (errors) std::fprintf(stderr, "blk_bench: %llu requests failed\n", (unsigned long long)errors);
  Result r;
  r.iops = done / secs;
  r.mibps = r.iops * p.bs / (1 << 20);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/var/tmp";
  uint64_t size_mib = 1024;
  int runtime = 5;
  bool fio = true;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc)
      dir = argv[++i];
    else if (a == "--size-mib" && i + 1 < argc)
      size_mib = std::stoull(argv[++i]);
    else if (a == "--runtime" && i + 1 < argc)
      runtime = std::stoi(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::max(1, std::stoi(argv[++i]));
    else if (a == "--skip-fio")
      fio = false;
    else if (a == "--allow-page-cache")
      g_allow_page_cache = true;
    else {
      std::fprintf(stderr,
                   "usage: blk_bench [--dir DIR] [--size-mib N] [--runtime S] [--repeat N] "
                   "[--skip-fio] [--allow-page-cache]\n");
      return 2;
    }
  }
  std::string raw = dir + "/blk_bench.raw", qcow = dir + "/blk_bench.qcow2";
  std::printf("preparing %llu MiB raw and qcow2 images in %s\n", (unsigned long long)size_mib,
              dir.c_str());
  std::fflush(stdout);
  if (run("dd if=/dev/urandom of=" + raw + " bs=1M count=" + std::to_string(size_mib) +
          " status=none") != 0 ||
      run("qemu-img convert -f raw -O qcow2 " + raw + " " + qcow) != 0) {
    std::fprintf(stderr, "blk_bench: could not create the images\n");
    return 1;
  }
  std::printf(
      "\n| image | pattern | device IOPS | device MiB/s | fio IOPS | fio MiB/s | device/fio | "
      "device RSS delta |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
  for (const char* fmt : {"raw", "qcow2"}) {
    std::string file = std::string(fmt) == "raw" ? raw : qcow;
    for (const Pattern& p : kPatterns) {
      long rss = 0;
      bool direct = true;
      std::vector<double> d_iops, d_mibps, f_iops, f_mibps;
      for (int r = 0; r < repeat; ++r) {
        long rss_run = 0;
        drop_caches();
        Result d = run_device(file, fmt, p, runtime, &rss_run, &direct);
        rss = std::max(rss, rss_run);
        // fio runs on the raw file: writing a qcow2 file with fio would destroy its metadata,
        // and raw on the same disk is what the qcow2 path should approach.
        drop_caches();
        Result f = fio ? run_fio(raw, p, runtime) : Result{};
        std::fprintf(stderr, "  %s %s run %d: device %.0f IOPS, fio %.0f IOPS\n", fmt, p.name,
                     r + 1, d.iops, f.iops);
        d_iops.push_back(d.iops);
        d_mibps.push_back(d.mibps);
        f_iops.push_back(f.iops);
        f_mibps.push_back(f.mibps);
      }
      Result d{median(d_iops), median(d_mibps)}, f{median(f_iops), median(f_mibps)};
      std::printf("| %s%s | %s | %.0f | %.1f | %.0f | %.1f | %.2f | %ld KiB |\n", fmt,
                  direct ? "" : " (no O_DIRECT)", p.name, d.iops, d.mibps, f.iops, f.mibps,
                  f.iops > 0 ? d.iops / f.iops : 0.0, rss);
      std::fflush(stdout);
    }
  }
  unlink(raw.c_str());
  unlink(qcow.c_str());
  return 0;
}
