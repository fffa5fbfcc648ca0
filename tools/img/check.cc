// img check [-f fmt] [--output=human|json] [-r leaks|all] [-q] FILE: qemu-img check's report
// and exit codes (0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no checks for the
// format).
#include <cstdio>

#include "common.h"
#include "img/image.h"
#include "img/qcow2.h"
#include "json.h"

namespace imgcli {
namespace {

constexpr int kExitCorrupt = 2;
constexpr int kExitLeaks = 3;
constexpr int kExitNotSupported = 63;

// qemu-img's dump_human_image_check.
void print_human(const img::CheckResult& r) {
  if (!(r.corruptions || r.leaks || r.check_errors)) {
    std::printf("No errors were found on the image.\n");
  } else {
    if (r.corruptions) {
      std::printf(
          "\n%llu errors were found on the image.\n"
          "Data may be corrupted, or further writes to the image may corrupt it.\n",
          static_cast<unsigned long long>(r.corruptions));
    }
    if (r.leaks) {
      std::printf(
          "\n%llu leaked clusters were found on the image.\n"
          "This means waste of disk space, but no harm to data.\n",
          static_cast<unsigned long long>(r.leaks));
    }
    if (r.check_errors) {
      std::printf("\n%llu internal errors have occurred during the check.\n",
                  static_cast<unsigned long long>(r.check_errors));
    }
  }
  if (r.total_clusters != 0 && r.allocated_clusters != 0) {
    double alloc = static_cast<double>(r.allocated_clusters);
    std::printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                static_cast<unsigned long long>(r.allocated_clusters),
                static_cast<unsigned long long>(r.total_clusters),
                alloc * 100.0 / static_cast<double>(r.total_clusters),
                static_cast<double>(r.fragmented_clusters) * 100.0 / alloc,
                static_cast<double>(r.compressed_clusters) * 100.0 / alloc);
  }
  if (r.image_end_offset) {
    std::printf("Image end offset: %llu\n", static_cast<unsigned long long>(r.image_end_offset));
  }
}

// qemu-img's ImageCheck: optional members only when non-zero.
Json to_json(const img::CheckResult& r, const std::string& file, const std::string& fmt) {
  Json o = Json::object();
  o.set("filename", file);
  o.set("format", fmt);
  o.set("check-errors", r.check_errors);
  auto opt = [&](const char* key, uint64_t v) {
    if (v) o.set(key, v);
  };
  opt("image-end-offset", r.image_end_offset);
  opt("corruptions", r.corruptions);
  opt("leaks", r.leaks);
  opt("corruptions-fixed", r.corruptions_fixed);
  opt("leaks-fixed", r.leaks_fixed);
  opt("total-clusters", r.total_clusters);
  opt("allocated-clusters", r.allocated_clusters);
  opt("fragmented-clusters", r.fragmented_clusters);
  opt("compressed-clusters", r.compressed_clusters);
  return o;
}

// The driver's findings go to stderr as it finds them, as QEMU's qcow2 driver prints them.
void print_messages(const img::CheckResult& r) {
  for (const std::string& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
}

}  // namespace

int run_check(const std::vector<std::string>& args) {
  CLI::App app("Check a disk image for consistency", "img check");
  std::string fmt, output = "human", repair, file;
  bool quiet = false, force_share = false;
  app.add_option("-f,--format", fmt, "image format (probed if not given)");
  app.add_option("--output", output, "human (default) or json");
  app.add_option("-r", repair, "repair: leaks or all");
  app.add_flag("-q", quiet, "quiet: print nothing on success");
  app.add_flag("-U,--force-share", force_share,
               "check the image even while another process writes it (without -r)");
  app.add_option("FILE", file, "the image")->required();
  if (int rc = parse_args(app, args); rc >= 0) return rc;
  if (output != "human" && output != "json") {
    return fail("--output must be used with human or json as argument.");
  }
  img::RepairMode mode = img::RepairMode::kNone;
  if (repair == "leaks") {
    mode = img::RepairMode::kLeaks;
  } else if (repair == "all") {
    mode = img::RepairMode::kAll;
  } else if (!repair.empty()) {
    return fail("Unknown option value for -r (expecting 'leaks' or 'all'): " + repair);
  }
  if (!fmt.empty() && !known_format(fmt)) return fail("Unknown file format '" + fmt + "'");

  auto loop = make_loop();
  if (!loop) return kExitError;
  bool writable = mode != img::RepairMode::kNone;
  auto file_or = img::open_file(*loop, file, {.read_only = !writable});
  if (!file_or) return fail(open_error(file, file_or.error()));
  img::File& f = **file_or;
  auto format = detect_format(*loop, f, fmt);
  if (!format) return fail(open_error(file, format.error()));
  if (auto locked = img::lock_image_file(f, *format, !writable, force_share); !locked) {
    return fail(open_error(file, locked.error()));
  }
  if (*format != "qcow2") {
    fail("This image format does not support checks");
    return kExitNotSupported;
  }

  // qemu-img check opens the image with its external data file: one that cannot be opened fails
  // the check (the data is nowhere), in qemu-img's words.
  if (auto q = loop->run(img::read_qcow2_info(f)); q && !q->data_file.empty()) {
    auto df = img::open_file(*loop, q->data_file, {.read_only = true});
    if (!df) {
      return fail(
          open_error(file, img::Error(df.error().code(), open_error(q->data_file, df.error()))));
    }
  }
  auto result = loop->run(img::check_qcow2(f, mode));
  if (!result) return fail("Check failed: " + reason(result.error()));
  print_messages(*result);
  img::CheckResult r = std::move(*result);
  if (r.corruptions_fixed || r.leaks_fixed) {
    // As qemu-img: report what was repaired, then check again and report that.
    if (output == "human" && !quiet) {
      std::printf(
          "The following inconsistencies were found and repaired:\n\n"
          "    %llu leaked clusters\n    %llu corruptions\n\n"
          "Double checking the fixed image now...\n",
          static_cast<unsigned long long>(r.leaks_fixed),
          static_cast<unsigned long long>(r.corruptions_fixed));
    }
    auto again = loop->run(img::check_qcow2(f, img::RepairMode::kNone));
    if (!again) return fail("Check failed: " + reason(again.error()));
    print_messages(*again);
    uint64_t leaks_fixed = r.leaks_fixed, corruptions_fixed = r.corruptions_fixed;
    r = std::move(*again);
    r.leaks_fixed = leaks_fixed;
    r.corruptions_fixed = corruptions_fixed;
  }
  if (!quiet) {
    if (output == "json") {
      std::printf("%s\n", to_json(r, file, *format).pretty().c_str());
    } else {
      print_human(r);
    }
  }
  std::fflush(stdout);
  if (r.check_errors) return fail("Check failed");
  if (r.corruptions) return kExitCorrupt;
  if (r.leaks) return kExitLeaks;
  return kExitOk;
}

}  // namespace imgcli
