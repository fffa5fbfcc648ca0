#include "lifecycle/format.h"

#include <algorithm>

namespace vmm::lifecycle {

std::string format_table(const Row& header, const std::vector<Row>& rows) {
  std::vector<size_t> width(header.size(), 0);
  auto measure = [&](const Row& r) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  };
  measure(header);
  for (const Row& r : rows) measure(r);
  std::string out;
  auto print = [&](const Row& r) {
    for (size_t i = 0; i < r.size(); ++i) {
      out += " " + r[i];
      if (i + 1 < r.size()) out.append(width[i] - r[i].size() + 2, ' ');
    }
    out += "\n";
  };
  print(header);
  for (size_t w : width) out.append(w + 3, '-');
  out += "\n";
  for (const Row& r : rows) print(r);
  return out;
}

std::string format_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [k, v] : fields) {
    std::string key = k + ":";
    if (key.size() < 15) key.append(15 - key.size(), ' ');
    out += key + " " + v + "\n";
  }
  return out;
}

std::string kib(uint64_t bytes) { return std::to_string(bytes / 1024) + " KiB"; }

}  // namespace vmm::lifecycle
