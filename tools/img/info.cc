// img info [-f fmt] [--output=human|json] FILE: qemu-img info's facts, from the file itself
// (header facts of qcow2 through read_qcow2_info).
#include <algorithm>
#include <cstdio>
#include <optional>

#include "common.h"
#include "img/image.h"
#include "img/qcow2.h"
#include "json.h"

namespace imgcli {
namespace {

struct ImageFacts {
  std::string filename;
  std::string format;
  uint64_t virtual_size = 0;
  // Unknown for an NBD export: qemu prints "disk size: unavailable" and leaves out actual-size.
  std::optional<uint64_t> actual_size;
  std::optional<img::Qcow2Info> qcow2;
  std::string full_backing;  // the backing path resolved against the image's folder
};

const char* compat_of(const img::Qcow2Info& q) { return q.version >= 3 ? "1.1" : "0.10"; }

Json to_json(const ImageFacts& f) {
  Json o = Json::object();
  o.set("virtual-size", f.virtual_size);
  o.set("filename", f.filename);
  if (f.qcow2) o.set("cluster-size", f.qcow2->cluster_size);
  o.set("format", f.format);
  if (f.actual_size) o.set("actual-size", *f.actual_size);
  // qemu's bdrv_get_info: raw over NBD has none to give, so no dirty-flag either.
  if (f.qcow2 || f.actual_size) o.set("dirty-flag", f.qcow2 ? f.qcow2->dirty : false);
  if (!f.qcow2) return o;
  const img::Qcow2Info& q = *f.qcow2;
  if (!q.snapshots.empty()) {
    // QAPI's SnapshotInfo: icount only when the entry records one.
    Json::Array list;
    for (const auto& s : q.snapshots) {
      Json j = Json::object();
      if (s.icount) j.set("icount", *s.icount);
      j.set("vm-clock-nsec", s.vm_clock_nsec % 1000000000);
      j.set("name", s.name);
      j.set("date-sec", s.date_sec);
      j.set("date-nsec", s.date_nsec);
      j.set("vm-clock-sec", s.vm_clock_nsec / 1000000000);
      j.set("id", s.id);
      j.set("vm-state-size", s.vm_state_size);
      list.push_back(std::move(j));
    }
    o.set("snapshots", Json::array(std::move(list)));
  }
  if (!q.backing_file.empty()) {
    o.set("backing-filename", q.backing_file);
    o.set("full-backing-filename", f.full_backing);
    if (!q.backing_format.empty()) o.set("backing-filename-format", q.backing_format);
  }
  Json data = Json::object();
  data.set("compat", compat_of(q));
  data.set("compression-type", q.compression_type.empty() ? "zlib" : q.compression_type);
  if (q.version >= 3) data.set("lazy-refcounts", q.lazy_refcounts);
  if (!q.bitmaps.empty()) {
    Json::Array list;
    for (const auto& b : q.bitmaps) {
      Json::Array flags;  // qcow2-bitmap.c get_bitmap_info_flags: in-use, then auto
      if (b.in_use) flags.emplace_back("in-use");
      if (b.auto_) flags.emplace_back("auto");
      Json j = Json::object();
      j.set("flags", Json::array(std::move(flags)));
      j.set("name", b.name);
      j.set("granularity", b.granularity);
      list.push_back(std::move(j));
    }
    data.set("bitmaps", Json::array(std::move(list)));
  }
  data.set("refcount-bits", q.refcount_bits);
  if (!q.data_file.empty()) {
    data.set("data-file", q.data_file);
    data.set("data-file-raw", q.data_file_raw);
  }
  if (q.version >= 3) {
    data.set("corrupt", q.corrupt);
    data.set("extended-l2", q.extended_l2);
  }
  Json spec = Json::object();
  spec.set("type", "qcow2");
  spec.set("data", std::move(data));
  o.set("format-specific", std::move(spec));
  return o;
}

void print_human(const ImageFacts& f) {
  std::printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
              f.filename.c_str(), f.format.c_str(), human_size(f.virtual_size).c_str(),
              static_cast<unsigned long long>(f.virtual_size), f.actual_size ? human_size(*f.actual_size).c_str() : "unavailable");
  if (!f.qcow2) return;
  const img::Qcow2Info& q = *f.qcow2;
  if (q.dirty) std::printf("cleanly shut down: no\n");
  std::printf("cluster_size: %u\n", q.cluster_size);
  if (!q.backing_file.empty()) {
    std::printf("backing file: %s", q.backing_file.c_str());
    if (f.full_backing != q.backing_file) std::printf(" (actual path: %s)", f.full_backing.c_str());
    std::printf("\n");
    if (!q.backing_format.empty())
      std::printf("backing file format: %s\n", q.backing_format.c_str());
  }
  if (!q.snapshots.empty()) print_snapshot_table(q.snapshots);
  std::printf("Format specific information:\n");
  std::printf("    compat: %s\n", compat_of(q));
  std::printf("    compression type: %s\n",
              q.compression_type.empty() ? "zlib" : q.compression_type.c_str());
  if (q.version >= 3) std::printf("    lazy refcounts: %s\n", q.lazy_refcounts ? "true" : "false");
  if (!q.bitmaps.empty()) {
    std::printf("    bitmaps:\n");
    for (size_t i = 0; i < q.bitmaps.size(); ++i) {
      const auto& b = q.bitmaps[i];
      std::printf("        [%zu]:\n            flags:\n", i);
      int k = 0;
      if (b.in_use) std::printf("                [%d]: in-use\n", k++);
      if (b.auto_) std::printf("                [%d]: auto\n", k++);
      std::printf("            name: %s\n            granularity: %llu\n", b.name.c_str(),
                  static_cast<unsigned long long>(b.granularity));
    }
  }
  std::printf("    refcount bits: %u\n", q.refcount_bits);
  if (!q.data_file.empty()) {
    std::printf("    data file: %s\n", q.data_file.c_str());
    std::printf("    data file raw: %s\n", q.data_file_raw ? "true" : "false");
  }
  if (q.version >= 3) {
    std::printf("    corrupt: %s\n", q.corrupt ? "true" : "false");
    std::printf("    extended l2: %s\n", q.extended_l2 ? "true" : "false");
  }
}

// The facts of one image file, as qemu-img info prints them.
img::Result<ImageFacts> gather_facts(img::IoLoop& loop, const std::string& file,
                                     const std::string& fmt, bool force_share) {
  auto file_or = img::open_file(loop, file, {.read_only = true});
  if (!file_or) return img::Unexpected(file_or.error());
  img::File& f = **file_or;
  auto format = detect_format(loop, f, fmt);
  if (!format) return img::Unexpected(format.error());
  // qemu-img info opens the image read-only, so a VM that writes it keeps it from us without -U.
  if (auto locked = img::lock_image_file(f, *format, true, force_share); !locked) {
    return img::Unexpected(locked.error());
  }
  // An NBD name as qemu prints it (the legacy nbd:unix: form comes out as its URI).
  ImageFacts facts{.filename = img::is_nbd_name(file) ? f.name() : file, .format = *format};
  auto allocated = f.allocated_size();
  if (allocated) {
    facts.actual_size = *allocated;
  } else if (!img::is_nbd_name(file)) {
    return img::Unexpected(allocated.error());
  }
  if (*format == "qcow2") {
    auto q = loop.run(img::read_qcow2_info(f));
    if (!q) return img::Unexpected(q.error());
    facts.virtual_size = q->virtual_size;
    facts.full_backing = img::combine_backing_path(file, q->backing_file);
    facts.qcow2 = std::move(*q);
  } else {
    auto size = f.size();
    if (!size) return img::Unexpected(size.error());
    facts.virtual_size = (*size + 511) / 512 * 512;  // QEMU counts whole 512-byte sectors
  }
  return facts;
}

}  // namespace

int run_info(const std::vector<std::string>& args) {
  CLI::App app("Show facts about a disk image", "img info");
  std::string fmt, output = "human", file;
  bool chain = false, force_share = false;
  app.add_option("-f,--format", fmt, "image format (probed if not given)");
  app.add_option("--output", output, "human (default) or json");
  app.add_flag("--backing-chain", chain, "also show every image of the backing chain");
  app.add_flag("-U,--force-share", force_share,
               "read the image even while another process writes it");
  app.add_option("FILE", file, "the image")->required();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (output != "human" && output != "json") {
    return fail("--output must be used with human or json as argument.");
  }
  if (!fmt.empty() && !known_format(fmt)) return fail("Unknown file format '" + fmt + "'");

  auto loop = make_loop();
  if (!loop) return kExitError;
  std::vector<ImageFacts> images;
  std::vector<std::string> seen;
  std::string path = file, path_fmt = fmt;
  for (;;) {
    auto facts = gather_facts(*loop, path, path_fmt, force_share);
    if (!facts) {
      std::string msg = open_error(path, facts.error());
      // qemu-img names a backing file twice: the open and the file it opened.
      return fail(images.empty() ? msg : "Could not open '" + path + "': " + msg);
    }
    seen.push_back(img::host_file_opener().identity(path));
    images.push_back(std::move(*facts));
    const ImageFacts& f = images.back();
    if (!chain || !f.qcow2 || f.qcow2->backing_file.empty()) break;
    path = f.full_backing;
    path_fmt = f.qcow2->backing_format;
    if (images.size() > 64) {
      return fail("Backing chain of '" + file + "' is deeper than 64 images");
    }
    std::string id = img::host_file_opener().identity(path);
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) {
      return fail("Backing file '" + path + "' creates an infinite loop.");
    }
  }
  if (output == "json") {
    if (!chain) {
      std::printf("%s\n", to_json(images[0]).pretty().c_str());
    } else {
      Json::Array list;
      for (const auto& f : images) list.push_back(to_json(f));
      std::printf("%s\n", Json::array(std::move(list)).pretty().c_str());
    }
  } else {
    for (size_t i = 0; i < images.size(); ++i) {
      if (i) std::printf("\n");
      print_human(images[i]);
    }
  }
  return kExitOk;
}

}  // namespace imgcli
