// A small JSON value and the writer `img --output=json` uses. Objects print in the order QEMU's
// QDict iterates them (its hash buckets), so the output matches qemu-img's byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace imgcli {

class Json {
 public:
  using Object = std::vector<std::pair<std::string, Json>>;
  using Array = std::vector<Json>;

  Json() : v_(nullptr) {}
  Json(bool b) : v_(b) {}
  Json(int64_t i) : v_(i) {}
  Json(uint64_t i) : v_(static_cast<int64_t>(i)) {}
  Json(int i) : v_(static_cast<int64_t>(i)) {}
  Json(unsigned i) : v_(static_cast<int64_t>(i)) {}
  Json(const char* s) : v_(std::string(s)) {}
  Json(std::string s) : v_(std::move(s)) {}
  static Json object() { return Json(Object{}); }
  static Json array(Array a) { return Json(std::move(a)); }

  // For objects: adds (or replaces) a member.
  Json& set(const std::string& key, Json value);

  // qemu's pretty form: 4-space indents, "key": value.
  std::string pretty() const;

 private:
  explicit Json(Object o) : v_(std::move(o)) {}
  explicit Json(Array a) : v_(std::move(a)) {}
  void write(std::string& out, int indent) const;
  std::variant<std::nullptr_t, bool, int64_t, std::string, Object, Array> v_;
};

// Writes s as a JSON string literal.
std::string json_quote(const std::string& s);

}  // namespace imgcli
