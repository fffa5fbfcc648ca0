// qemu-img amend's options and its entry point (qemu-img.c img_amend, block/qcow2.c
// qcow2_amend_opts and qcow2_amend_options): the keys qcow2 can change on an existing image,
// the creation-only keys refused with qemu-img's hint, and the values checked in qemu's words.
#include <array>
#include <cstdlib>
#include <string_view>

#include "img/ops.h"
#include "ops/option_list.h"
#include "qcow2/open.h"

namespace img {
namespace {

struct AmendKey {
  const char* name;
  const char* type;
  const char* help;
};
// The amend options qemu-img 7.2 lists for qcow2 ("-o help"), in its order. The encrypt.*
// ones only apply to LUKS-encrypted images, which libimg does not open.
constexpr std::array kAmendKeys = {
    AmendKey{"backing_file", "str", "File name of a base image"},
    AmendKey{"backing_fmt", "str", "Image format of the base image"},
    AmendKey{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
    AmendKey{"data_file", "str", "File name of an external data file"},
    AmendKey{"data_file_raw", "bool (on/off)",
             "The external data file must stay valid as a raw image"},
    AmendKey{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
    AmendKey{"encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"},
    AmendKey{"encrypt.new-secret", "str",
             "New secret to set in the matching keyslots. Empty string to erase"},
    AmendKey{"encrypt.old-secret", "str", "Select all keyslots that match this password"},
    AmendKey{"encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"},
    AmendKey{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
    AmendKey{"refcount_bits", "num", "Width of a reference count entry in bits"},
    AmendKey{"size", "size", "Virtual disk size"},
};
// qcow2 creation options that amend cannot change (qcow2_create_opts minus the amend ones).
constexpr std::array<std::string_view, 14> kCreateOnlyKeys = {
    "cluster_size",       "compression_type", "encrypt.cipher-alg", "encrypt.cipher-mode",
    "encrypt.format",     "encrypt.hash-alg", "encrypt.ivgen-alg",  "encrypt.ivgen-hash-alg",
    "encrypt.key-secret", "encryption",       "extended_l2",        "preallocation",
    "encrypt.slot",       "encrypt.hash"};

const AmendKey* find_key(std::string_view key) {
  for (const AmendKey& k : kAmendKeys) {
    if (key == k.name) return &k;
  }
  return nullptr;
}

// qemu's bool syntax (qapi_bool_parse).
Result<bool> parse_bool(const std::string& key, const std::string& v) {
  if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
  if (v == "off" || v == "no" || v == "false" || v == "n") return false;
  return invalid_argument("Parameter '" + key + "' expects 'on' or 'off'");
}

}  // namespace

Result<AmendOptionList> parse_amend_options(const std::string& format,
                                            const std::vector<std::string>& option_strings) {
  AmendOptionList out;
  std::vector<std::pair<std::string, std::string>> items;
  for (const std::string& text : option_strings) {
    if (text.empty()) return invalid_argument("Invalid option list: " + text);
    for (std::string& item : split_option_items(text)) {
      if (item == "help" || item == "?") {
        out.help = true;
        continue;
      }
      size_t eq = item.find('=');
      std::string key = item.substr(0, eq);
      std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
      const AmendKey* k = format == "qcow2" ? find_key(key) : nullptr;
      if (k == nullptr) {
        std::string msg = "Invalid parameter '" + key + "'";
        bool create_only = key == "size" || key == "preallocation";  // raw's creation options
        if (format == "qcow2") {
          for (std::string_view c : kCreateOnlyKeys) create_only |= key == c;
        }
        if (create_only) msg += "\nThis option is only supported for image creation";
        return invalid_argument(msg);
      }
      if (eq == std::string::npos && std::string_view(k->type).starts_with("bool")) value = "on";
      items.emplace_back(std::move(key), std::move(value));
    }
  }
  if (out.help) return out;
  // A later value for a key replaces an earlier one (qemu_opt_get takes the last).
  Qcow2AmendOptions& o = out.options;
  for (const auto& [key, value] : items) {
    if (key == "compat") {
      if (value == "0.10" || value == "v2") {
        o.version = 2;
      } else if (value == "1.1" || value == "v3") {
        o.version = 3;
      } else {
        return invalid_argument("Unknown compatibility level " + value);
      }
    } else if (key == "lazy_refcounts") {
      ASSIGN_OR_RETURN(bool v, parse_bool(key, value));
      o.lazy_refcounts = v;
    } else if (key == "refcount_bits") {
      char* end = nullptr;
      unsigned long long v = std::strtoull(value.c_str(), &end, 0);
      if (value.empty() || *end != '\0' || value[0] == '-') {
        return invalid_argument("Parameter 'refcount_bits' expects a number");
      }
      if (v == 0 || v > 64 || (v & (v - 1)) != 0) {
        return invalid_argument("Refcount width must be a power of two and may not exceed 64 bits");
      }
      o.refcount_bits = static_cast<uint32_t>(v);
    } else if (key == "size") {
      auto size = parse_size(value);
      if (!size) {
        return invalid_argument(
            "Parameter 'size' expects a non-negative number below 2^64\n"
            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
            "tera-, peta-\nand exabytes, respectively.");
      }
      o.size = *size;
    } else if (key == "backing_file") {
      o.backing_file = value;
    } else if (key == "backing_fmt") {
      o.backing_format = value;
    } else if (key == "data_file") {
      o.data_file = value;
    } else if (key == "data_file_raw") {
      ASSIGN_OR_RETURN(bool v, parse_bool(key, value));
      o.data_file_raw = v;
    } else {
      // encrypt.*: only LUKS-encrypted images take them (libimg opens none).
      return not_supported(
          "Changing the encryption parameters is not supported for "
          "unencrypted images");
    }
  }
  return out;
}

std::string amend_options_help(const std::string& format) {
  std::string out = "Amend options for '" + format + "':\n";
  if (format != "qcow2") return out;
  for (const AmendKey& k : kAmendKeys) {
    std::string left = strfmt("  %s=<%s>", k.name, k.type);
    out += strfmt("%-24s - %s\n", left.c_str(), k.help);
  }
  return out;
}

Task<Status> amend_image(BlockDriver& drv, const Qcow2AmendOptions& opts,
                         const AmendProgress& progress) {
  co_return co_await qcow2::amend_qcow2(drv, opts, progress);
}

}  // namespace img
