// qemu's -o option list syntax, shared by create and amend option parsing.
#pragma once

#include <string>
#include <vector>

namespace img {

// Splits "a=b,c=d" into its items ("a=b", "c=d"); ",," stands for a comma inside an item, and
// empty items are dropped.
std::vector<std::string> split_option_items(const std::string& text);

}  // namespace img
