// qemu-img create's -o key=value,... options for qcow2 and raw, with qemu-img 7.2's names,
// messages and help text.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <span>
#include <string>

#include "img/ops.h"
#include "ops/option_list.h"

namespace img {
namespace {

struct OptionInfo {
  const char* name;
  const char* type;  // as "-o help" shows it
  const char* help;
  bool is_size;  // parsed with parse_size as soon as it is given
};

// qcow2 options this build supports, in "-o help" (alphabetical) order.
constexpr std::array kQcow2Options = {
    OptionInfo{"backing_file", "str", "File name of a base image", false},
    OptionInfo{"backing_fmt", "str", "Image format of the base image", false},
    OptionInfo{"cluster_size", "size", "qcow2 cluster size", true},
    OptionInfo{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])", false},
    OptionInfo{"compression_type", "str", "Compression method used for image cluster compression",
               false},
    OptionInfo{"data_file", "str", "File name of an external data file", false},
    OptionInfo{"data_file_raw", "bool (on/off)",
               "The external data file must stay valid as a raw image", false},
    OptionInfo{"extended_l2", "bool (on/off)", "Extended L2 tables", false},
    OptionInfo{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates", false},
    OptionInfo{"preallocation", "str",
               "Preallocation mode (allowed values: off, metadata, falloc, full)", false},
    OptionInfo{"refcount_bits", "num", "Width of a reference count entry in bits", false},
    OptionInfo{"size", "size", "Virtual disk size", true},
};

constexpr std::array kRawOptions = {
    OptionInfo{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)",
               false},
    OptionInfo{"size", "size", "Virtual disk size", true},
};

std::span<const OptionInfo> options_of(const std::string& format) {
  if (format == "qcow2") return kQcow2Options;
  return kRawOptions;
}

const OptionInfo* find_option(const std::string& format, std::string_view key) {
  for (const OptionInfo& o : options_of(format)) {
    if (key == o.name) return &o;
  }
  return nullptr;
}

// "on"/"off" as qemu's bool options take them.
Result<bool> parse_bool(const std::string& key, const std::string& v) {
  if (v == "on") return true;
  if (v == "off") return false;
  return invalid_argument("Parameter '" + key + "' expects 'on' or 'off'");
}

Unexpected bad_value(const std::string& param, const std::string& v) {
  return invalid_argument("Parameter '" + param + "' does not accept value '" + v + "'");
}

Result<Preallocation> parse_preallocation(const std::string& format, const std::string& v) {
  if (v == "off") return Preallocation::kOff;
  if (v == "metadata") {
    if (format != "qcow2") return invalid_argument("Unsupported preallocation mode: metadata");
    return Preallocation::kMetadata;
  }
  if (v == "falloc") return Preallocation::kFalloc;
  if (v == "full") return Preallocation::kFull;
  return bad_value("preallocation", v);
}

}  // namespace

std::vector<std::string> split_option_items(const std::string& text) {
  std::vector<std::string> items;
  size_t i = 0;
  while (i <= text.size()) {
    // One "key=value" up to an unescaped comma; ",," stands for a comma in a value.
    std::string item;
    while (i < text.size()) {
      if (text[i] == ',') {
        if (i + 1 < text.size() && text[i + 1] == ',') {
          item += ',';
          i += 2;
          continue;
        }
        break;
      }
      item += text[i++];
    }
    ++i;
    if (!item.empty()) items.push_back(std::move(item));
  }
  return items;
}

const std::string* CreateOptionList::find(std::string_view key) const {
  for (auto it = items.rbegin(); it != items.rend(); ++it) {
    if (it->first == key) return &it->second;
  }
  return nullptr;
}

Result<CreateOptionList> parse_create_options(const std::string& format,
                                              const std::vector<std::string>& option_strings) {
  CreateOptionList list;
  for (const std::string& text : option_strings) {
    for (std::string& item : split_option_items(text)) {
      if (item == "help" || item == "?") {
        list.help = true;
        continue;
      }
      size_t eq = item.find('=');
      std::string key = item.substr(0, eq);
      std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
      const OptionInfo* info = find_option(format, key);
      if (info == nullptr) return invalid_argument("Invalid parameter '" + key + "'");
      if (std::string_view(info->type).starts_with("bool")) {
        if (eq == std::string::npos) value = "on";  // qemu takes a bare bool key as on
        // Checked as the option is parsed, before qemu-img prints "Formatting ...".
        if (value != "on" && value != "off") {
          return invalid_argument("Parameter '" + key + "' expects 'on' or 'off'");
        }
      }
      if (info->is_size) {
        auto size = parse_size(value);
        if (!size) {
          return invalid_argument("Parameter '" + key +
                                  "' expects a non-negative number below 2^64\n"
                                  "Optional suffix k, M, G, T, P or E means kilo-, mega-, "
                                  "giga-, tera-, peta-\nand exabytes, respectively.");
        }
        value = std::to_string(*size);
      }
      list.items.emplace_back(std::move(key), std::move(value));
    }
  }
  return list;
}

Result<Qcow2CreateOptions> to_create_options(const std::string& format,
                                             const CreateOptionList& list) {
  Qcow2CreateOptions o;
  // Size values are decimal after parse_create_options, but a caller may fill the list itself:
  // parse them again instead of std::stoull, which throws on anything else.
  if (auto v = list.find("size")) {
    ASSIGN_OR_RETURN(o.size, parse_size(*v));
  }
  if (auto v = list.find("preallocation")) {
    ASSIGN_OR_RETURN(o.preallocation, parse_preallocation(format, *v));
  }
  if (format != "qcow2") return o;
  if (auto v = list.find("compat")) {
    if (*v == "0.10" || *v == "v2") {
      o.version = 2;
    } else if (*v == "1.1" || *v == "v3") {
      o.version = 3;
    } else {
      return bad_value("version", *v);
    }
  }
  if (auto v = list.find("cluster_size")) {
    auto parsed = parse_size(*v);
    if (!parsed) return bad_value("cluster_size", *v);
    uint64_t cs = *parsed;
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)) != 0) {
      return invalid_argument("Cluster size must be a power of two between 512 and 2048k");
    }
    o.cluster_size = static_cast<uint32_t>(cs);
  }
  if (auto v = list.find("refcount_bits")) {
    char* end = nullptr;
    unsigned long long bits = std::strtoull(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0') {
      return invalid_argument("Parameter 'refcount_bits' expects a number");
    }
    if (bits == 0 || bits > 64 || (bits & (bits - 1)) != 0) {
      return invalid_argument("Refcount width must be a power of two and may not exceed 64 bits");
    }
    o.refcount_bits = static_cast<uint32_t>(bits);
  }
  if (auto v = list.find("lazy_refcounts")) {
    ASSIGN_OR_RETURN(o.lazy_refcounts, parse_bool("lazy_refcounts", *v));
  }
  if (auto v = list.find("extended_l2")) {
    ASSIGN_OR_RETURN(o.extended_l2, parse_bool("extended_l2", *v));
  }
  if (auto v = list.find("compression_type")) {
    if (*v != "zlib" && *v != "zstd") return bad_value("compression-type", *v);
    o.compression_type = *v;
  }
  if (auto v = list.find("backing_file")) o.backing_file = *v;
  if (auto v = list.find("backing_fmt")) o.backing_format = *v;
  if (auto v = list.find("data_file")) o.data_file = *v;
  if (auto v = list.find("data_file_raw")) {
    ASSIGN_OR_RETURN(o.data_file_raw, parse_bool("data_file_raw", *v));
  }
  if (o.version < 3) {
    if (!o.data_file.empty()) {
      return invalid_argument(
          "External data files are only supported with compatibility level 1.1 and above (use "
          "version=v3 or greater)");
    }
    if (o.lazy_refcounts) {
      return invalid_argument(
          "Lazy refcounts only supported with compatibility level 1.1 and above (use "
          "version=v3 or greater)");
    }
    if (o.refcount_bits != 16) {
      return invalid_argument(
          "Different refcount widths than 16 bits require compatibility level 1.1 or above "
          "(use version=v3 or greater)");
    }
    if (o.compression_type != "zlib") {
      return invalid_argument(
          "Non-zlib compression type is only supported with compatibility level 1.1 and "
          "above (use version=v3 or greater)");
    }
    if (o.extended_l2) {
      return invalid_argument(
          "Extended L2 entries are only supported with compatibility level 1.1 and above (use "
          "version=v3 or greater)");
    }
  }
  if (o.extended_l2 && o.cluster_size < 16384) {
    return invalid_argument(
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  if (!o.backing_format.empty() && o.backing_file.empty()) {
    return invalid_argument("Backing format cannot be used without backing file");
  }
  if (o.data_file_raw && o.data_file.empty()) {
    return invalid_argument("data-file-raw requires data-file");
  }
  if (o.data_file_raw && !o.backing_file.empty()) {
    return invalid_argument("Backing file and data-file-raw cannot be used at the same time");
  }
  // qcow2_co_create: a raw data file maps every cluster (its metadata is preallocated).
  if (o.data_file_raw && o.preallocation == Preallocation::kOff) {
    o.preallocation = Preallocation::kMetadata;
  }
  return o;
}

std::string create_options_help(const std::string& format) {
  std::string out = "Supported " + format + " options:\n";
  for (const OptionInfo& o : options_of(format)) {
    std::string left = strfmt("  %s=<%s>", o.name, o.type);
    out += strfmt("%-24s - %s\n", left.c_str(), o.help);
  }
  out +=
      "\nThe protocol level may support further options.\n"
      "Specify the target filename to include those options.\n";
  return out;
}

std::string describe_create_options(const std::string& format, const CreateOptionList& list,
                                    uint64_t size) {
  struct Shown {
    const char* key;
    const char* fallback;  // printed when not given; nullptr: left out
  };
  // qemu-img 7.2 prints the driver's options, then the protocol's, in this order.
  static constexpr Shown kQcow2[] = {
      {"cluster_size", "65536"},    {"extended_l2", "off"},    {"preallocation", nullptr},
      {"compression_type", "zlib"}, {"size", nullptr},         {"compat", nullptr},
      {"backing_file", nullptr},    {"backing_fmt", nullptr},  {"data_file", nullptr},
      {"data_file_raw", nullptr},   {"lazy_refcounts", "off"}, {"refcount_bits", "16"},
  };
  static constexpr Shown kRaw[] = {{"size", nullptr}, {"preallocation", nullptr}};
  std::span<const Shown> shown(kRaw);
  if (format == "qcow2") shown = kQcow2;
  std::string out;
  for (const Shown& s : shown) {
    std::string value;
    if (std::string_view(s.key) == "size") {
      value = std::to_string(size);
    } else if (auto v = list.find(s.key)) {
      value = *v;
    } else if (s.fallback) {
      value = s.fallback;
    } else {
      continue;
    }
    if (!out.empty()) out += ' ';
    out += std::string(s.key) + "=" + value;
  }
  return out;
}

}  // namespace img
