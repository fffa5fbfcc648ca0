// virsh's output shapes, so that people and scripts that read virsh's read ours:
// - tables (`list`, `domblklist`) as libvirt's tools/vsh-table.c prints them: each cell preceded
//   by one space, every column but the last padded to its widest cell plus two spaces, a header
//   row and a dashes line as long as the sum of (column width + 3);
// - `dominfo` as "%-15s %s" lines.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vmm::lifecycle {

using Row = std::vector<std::string>;

// header and every row have the same number of cells.
std::string format_table(const Row& header, const std::vector<Row>& rows);
// "Id:             1\n" ...
std::string format_fields(const std::vector<std::pair<std::string, std::string>>& fields);
// 268435456 -> "262144 KiB" (virsh's memory unit).
std::string kib(uint64_t bytes);

}  // namespace vmm::lifecycle
