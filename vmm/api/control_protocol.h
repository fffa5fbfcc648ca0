// The control socket's wire protocol: one JSON object per line, QMP-like so that people who know
// QEMU's monitor recognise it (docs/vmm-control.md).
//
//   request:  {"execute": "NAME", "arguments": {...}, "id": ANY}   ("arguments", "id" optional)
//   reply:    {"return": {...}, "id": ANY}
//   error:    {"error": {"class": "CLASS", "desc": "what went wrong"}, "id": ANY}
//
// On connect the server sends one greeting line, {"greeting": {"protocol": "vmm-control",
// "version": 1, "commands": [...]}}. Error classes: CommandNotFound, InvalidRequest (not JSON,
// not an object, a line over kMaxLineBytes), InvalidArgument (bad or unexpected arguments),
// WrongState (e.g. resume while running), Busy (another client holds the socket),
// InternalError (the VMM failed to do what was asked).
//
// Parsing uses nlohmann-json3 (Debian's nlohmann-json3-dev, header-only, the most used C++ JSON
// library): its parser is iterative, so deeply nested hostile input cannot blow the stack, and it
// rejects ill-formed UTF-8. Its exceptions stay inside this file: every entry returns a value.
//
// Thread-safety: LineBuffer and Dispatcher are single-threaded values; handlers run on the
// thread that calls Dispatcher::handle_line.
#pragma once

#include <cstddef>
#include <expected>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::api {

using Json = nlohmann::json;

// A request line may not be longer than this (newline excluded): a client cannot make the VMM
// buffer without bound.
inline constexpr size_t kMaxLineBytes = 64 << 10;
inline constexpr int kProtocolVersion = 1;

struct ControlError {
  std::string cls;   // "CommandNotFound", "InvalidRequest", ...
  std::string desc;  // one line, says what is wrong
};

inline ControlError invalid_argument(std::string desc) {
  return {"InvalidArgument", std::move(desc)};
}
inline ControlError wrong_state(std::string desc) { return {"WrongState", std::move(desc)}; }
inline ControlError internal_error(std::string desc) { return {"InternalError", std::move(desc)}; }

using CommandResult = std::expected<Json, ControlError>;

// Splits a byte stream into lines of at most kMaxLineBytes. A longer line is reported once as
// too long and its bytes up to the next newline are dropped. A trailing '\r' is removed.
class LineBuffer {
 public:
  struct Line {
    std::string text;
    bool too_long = false;  // text is empty: the line was over the bound and was dropped
  };
  explicit LineBuffer(size_t max = kMaxLineBytes) : max_(max) {}
  // Appends bytes; complete lines become available through next().
  void feed(std::string_view bytes);
  std::optional<Line> next();

 private:
  size_t max_;
  std::string partial_;
  bool discarding_ = false;  // inside an over-long line, until its newline
  std::vector<Line> ready_;
  size_t ready_at_ = 0;
};

// Serialises a reply as one line (with '\n'). Invalid UTF-8 (from a path, say) is replaced,
// never thrown.
std::string to_line(const Json& j);
std::string error_line(const ControlError& e, const Json* id = nullptr);

// Commands by name, each with the argument names it accepts.
class Dispatcher {
 public:
  using Handler = std::function<CommandResult(const Json& args)>;
  // args: the accepted argument names; any other is refused before the handler runs.
  void add(std::string name, std::vector<std::string> args, Handler handler);
  std::vector<std::string> commands() const;
  // One request line in, one reply line out (with '\n'). Never throws.
  std::string handle_line(std::string_view line) const;
  std::string greeting() const;

 private:
  struct Command {
    std::vector<std::string> args;
    Handler handler;
  };
  std::map<std::string, Command, std::less<>> commands_;
};

// Argument helpers for handlers: a missing argument gives the default; a present one of the
// wrong type or range is an InvalidArgument error naming it.
std::expected<std::optional<double>, ControlError> number_arg(const Json& args,
                                                              const std::string& name, double min,
                                                              double max);
std::expected<std::optional<bool>, ControlError> bool_arg(const Json& args,
                                                          const std::string& name);

}  // namespace vmm::api
