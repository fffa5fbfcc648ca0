#include "api/control_protocol.h"

#include <cmath>

#include "img/status.h"

namespace vmm::api {
namespace {

// nlohmann's messages start with "[json.exception.parse_error.101] ": the rest is what a user
// needs ("parse error at line 1, column 3: syntax error while parsing value - ...").
std::string strip_exception_id(const std::string& what) {
  size_t at = what.find("] ");
  std::string m = at == std::string::npos ? what : what.substr(at + 2);
  // "last read: '...'" quotes the client's bytes: keep the reply one short line.
  if (m.size() > 200) m = m.substr(0, 200) + "...";
  return m;
}

std::expected<Json, ControlError> parse_object(std::string_view line) {
  Json j;
  try {
    j = Json::parse(line.begin(), line.end());
  } catch (const Json::exception& e) {
    return std::unexpected(
        ControlError{"InvalidRequest", "malformed JSON: " + strip_exception_id(e.what())});
  }
  if (!j.is_object()) {
    return std::unexpected(ControlError{
        "InvalidRequest", std::string("a request is a JSON object, not ") + j.type_name()});
  }
  return j;
}

}  // namespace

void LineBuffer::feed(std::string_view bytes) {
  if (ready_at_ == ready_.size()) {
    ready_.clear();
    ready_at_ = 0;
  }
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    std::string_view part = bytes.substr(0, nl);
    if (!discarding_) {
      if (partial_.size() + part.size() > max_) {
        // Report once, then drop the rest of this line; the next line is served normally.
        discarding_ = true;
        partial_.clear();
        ready_.push_back(Line{{}, true});
      } else {
        partial_.append(part);
      }
    }
    if (nl == std::string_view::npos) break;
    if (!discarding_) {
      if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
      ready_.push_back(Line{std::move(partial_), false});
    }
    partial_.clear();
    discarding_ = false;
    bytes.remove_prefix(nl + 1);
  }
}

std::optional<LineBuffer::Line> LineBuffer::next() {
  if (ready_at_ == ready_.size()) return std::nullopt;
  return std::move(ready_[ready_at_++]);
}

std::string to_line(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string error_line(const ControlError& e, const Json* id) {
  Json r = {{"error", {{"class", e.cls}, {"desc", e.desc}}}};
  if (id) r["id"] = *id;
  return to_line(r);
}

void Dispatcher::add(std::string name, std::vector<std::string> args, Handler handler) {
  commands_[std::move(name)] = Command{std::move(args), std::move(handler)};
}

std::vector<std::string> Dispatcher::commands() const {
  std::vector<std::string> out;
  for (const auto& [name, c] : commands_) out.push_back(name);
  return out;
}

std::string Dispatcher::greeting() const {
  return to_line(
      {{"greeting",
        {{"protocol", "vmm-control"}, {"version", kProtocolVersion}, {"commands", commands()}}}});
}

std::string Dispatcher::handle_line(std::string_view line) const {
  auto req = parse_object(line);
  if (!req) return error_line(req.error());
  const Json* id = nullptr;
  if (auto it = req->find("id"); it != req->end()) id = &*it;
  for (const auto& [key, value] : req->items()) {
    if (key != "execute" && key != "arguments" && key != "id") {
      return error_line({"InvalidRequest",
                         "unexpected member '" + key + "' (a request has execute, arguments, id)"},
                        id);
    }
  }
  auto ex = req->find("execute");
  if (ex == req->end() || !ex->is_string()) {
    return error_line({"InvalidRequest", "a request needs \"execute\": \"COMMAND\""}, id);
  }
  const std::string& name = ex->get_ref<const std::string&>();
  auto cmd = commands_.find(name);
  if (cmd == commands_.end()) {
    std::string known;
    for (const auto& [n, c] : commands_) known += (known.empty() ? "" : ", ") + n;
    return error_line(
        {"CommandNotFound", "unknown command '" + name + "' (commands: " + known + ")"}, id);
  }
  static const Json kEmpty = Json::object();
  const Json* args = &kEmpty;
  if (auto a = req->find("arguments"); a != req->end()) {
    if (!a->is_object()) {
      return error_line(invalid_argument("\"arguments\" must be an object"), id);
    }
    args = &*a;
  }
  for (const auto& [key, value] : args->items()) {
    bool known = false;
    for (const std::string& k : cmd->second.args) known = known || k == key;
    if (!known) {
      return error_line(invalid_argument("command '" + name + "' has no argument '" + key + "'"),
                        id);
    }
  }
  CommandResult r;
  try {
    r = cmd->second.handler(*args);
  } catch (const std::exception& e) {  // a handler bug must not end the VM
    r = std::unexpected(internal_error(std::string("command failed: ") + e.what()));
  }
  if (!r) return error_line(r.error(), id);
  Json reply = {{"return", std::move(*r)}};
  if (id) reply["id"] = *id;
  return to_line(reply);
}

std::expected<std::optional<double>, ControlError> number_arg(const Json& args,
                                                              const std::string& name, double min,
                                                              double max) {
  auto it = args.find(name);
  if (it == args.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) {
    return std::unexpected(invalid_argument("'" + name + "' must be a number"));
  }
  double v = it->get<double>();
  if (!std::isfinite(v) || v < min || v > max) {
    return std::unexpected(
        invalid_argument(img::strfmt("'%s' must be between %g and %g", name.c_str(), min, max)));
  }
  return std::optional<double>(v);
}

std::expected<std::optional<bool>, ControlError> bool_arg(const Json& args,
                                                          const std::string& name) {
  auto it = args.find(name);
  if (it == args.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean())
    return std::unexpected(invalid_argument("'" + name + "' must be true or false"));
  return std::optional<bool>(it->get<bool>());
}

}  // namespace vmm::api
