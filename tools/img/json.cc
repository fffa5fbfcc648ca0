// The JSON writer, with QEMU's QDict member order (qobject/qdict.c).
#include "json.h"

#include <algorithm>
#include <cstring>

#include "img/status.h"

namespace imgcli {
namespace {

constexpr unsigned kQdictBuckets = 512;  // QDICT_BUCKET_MAX

// qdict.c's tdb_hash.
unsigned tdb_hash(const std::string& name) {
  unsigned value = 0x238F13AF * static_cast<unsigned>(name.size());
  for (unsigned i = 0; i < name.size(); ++i) {
    value = value + (static_cast<unsigned>(static_cast<unsigned char>(name[i])) << (i * 5 % 24));
  }
  return 1103515243 * value + 12345;
}

void indent_to(std::string& out, int level) { out.append(static_cast<size_t>(level) * 4, ' '); }

}  // namespace

Json& Json::set(const std::string& key, Json value) {
  auto& obj = std::get<Object>(v_);
  for (auto& [k, v] : obj) {
    if (k == key) {
      v = std::move(value);
      return *this;
    }
  }
  obj.emplace_back(key, std::move(value));
  return *this;
}

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += img::strfmt("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

void Json::write(std::string& out, int indent) const {
  if (std::holds_alternative<std::nullptr_t>(v_)) {
    out += "null";
  } else if (auto b = std::get_if<bool>(&v_)) {
    out += *b ? "true" : "false";
  } else if (auto i = std::get_if<int64_t>(&v_)) {
    out += std::to_string(*i);
  } else if (auto s = std::get_if<std::string>(&v_)) {
    out += json_quote(*s);
  } else if (auto o = std::get_if<Object>(&v_)) {
    if (o->empty()) {
      out += "{}";
      return;
    }
    // QDict order: bucket by bucket; inside a bucket the newest member first.
    std::vector<std::pair<unsigned, size_t>> order;
    for (size_t k = 0; k < o->size(); ++k)
      order.emplace_back(tdb_hash((*o)[k].first) % kQdictBuckets, k);
    std::sort(order.begin(), order.end(), [](auto& a, auto& b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    out += "{\n";
    bool first = true;
    for (auto& [bucket, k] : order) {
      if (!first) out += ",\n";
      first = false;
      indent_to(out, indent + 1);
      out += json_quote((*o)[k].first) + ": ";
      (*o)[k].second.write(out, indent + 1);
    }
    out += "\n";
    indent_to(out, indent);
    out += "}";
  } else if (auto a = std::get_if<Array>(&v_)) {
    out += "[";  // qemu's writer: an empty list is "[", a new line, the indent and "]"
    if (!a->empty()) out += "\n";
    for (size_t k = 0; k < a->size(); ++k) {
      if (k) out += ",\n";
      indent_to(out, indent + 1);
      (*a)[k].write(out, indent + 1);
    }
    out += "\n";
    indent_to(out, indent);
    out += "]";
  }
}

std::string Json::pretty() const {
  std::string out;
  write(out, 0);
  return out;
}

}  // namespace imgcli
