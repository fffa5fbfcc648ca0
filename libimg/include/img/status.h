// Errors as values: Error names what went wrong, Result<T> carries a value or an Error, Status is
// Result<void>. Nothing in libimg throws across its API.
//
// Thread-safety: plain values; safe to copy between threads.
#pragma once

#include <cstdarg>
#include <expected>
#include <string>
#include <utility>

namespace img {

enum class ErrorCode {
  kInvalidArgument,  // a caller passed something wrong (bad option, out-of-range offset)
  kNotFound,         // a file does not exist
  kCorruption,       // image metadata is inconsistent or malformed
  kIo,               // the OS reported an error (errno is kept)
  kNotSupported,     // a valid feature this build does not implement
  kReadOnly,         // write to an image opened read-only (or marked corrupt)
  kNoSpace,          // the image or host file cannot grow further
  kPermission,       // the OS denied access
  kLocked,           // another user's image lock forbids this use (File::lock)
};

class [[nodiscard]] Error {
 public:
  Error(ErrorCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }
  // "corruption: L2 table offset 0x1234 is not cluster aligned"
  std::string to_string() const;
  // Prepends context: "reading L1 table: <message>".
  Error& prepend(const std::string& context) {
    message_ = context + ": " + message_;
    return *this;
  }

 private:
  ErrorCode code_;
  int errno_;
  std::string message_;
};

template <class T>
using Result = std::expected<T, Error>;
using Status = Result<void>;

using Unexpected = std::unexpected<Error>;

// printf-style formatting into a std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

inline Unexpected make_error(ErrorCode code, std::string msg, int sys_errno = 0) {
  return Unexpected(Error(code, std::move(msg), sys_errno));
}
inline Unexpected invalid_argument(std::string msg) {
  return make_error(ErrorCode::kInvalidArgument, std::move(msg));
}
inline Unexpected corruption(std::string msg) {
  return make_error(ErrorCode::kCorruption, std::move(msg));
}
inline Unexpected not_supported(std::string msg) {
  return make_error(ErrorCode::kNotSupported, std::move(msg));
}
inline Unexpected read_only_error(std::string msg) {
  return make_error(ErrorCode::kReadOnly, std::move(msg));
}
inline Unexpected no_space(std::string msg) { return make_error(ErrorCode::kNoSpace, std::move(msg)); }
// From an errno value: the code follows errno (ENOENT -> kNotFound, EACCES -> kPermission, ...).
Unexpected io_error(int sys_errno, const std::string& what);

}  // namespace img

#define IMG_CONCAT_INNER(a, b) a##b
#define IMG_CONCAT(a, b) IMG_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(status_expr): returns the error from the enclosing function.
#define RETURN_IF_ERROR(expr)                                          \
  do {                                                                 \
    auto&& img_status_ = (expr);                                       \
    if (!img_status_) return ::img::Unexpected(std::move(img_status_).error()); \
  } while (0)

// ASSIGN_OR_RETURN(auto x, result_expr)
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(IMG_CONCAT(img_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)                      \
  auto tmp = (expr);                                               \
  if (!tmp) return ::img::Unexpected(std::move(tmp).error());      \
  lhs = std::move(*tmp)

// Coroutine forms: expr may contain co_await.
#define CO_RETURN_IF_ERROR(expr)                                           \
  do {                                                                     \
    auto img_status_ = (expr);                                             \
    if (!img_status_) co_return ::img::Unexpected(std::move(img_status_).error()); \
  } while (0)

#define CO_ASSIGN_OR_RETURN(lhs, expr) \
  CO_ASSIGN_OR_RETURN_IMPL(IMG_CONCAT(img_result_, __LINE__), lhs, expr)
#define CO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)                      \
  auto tmp = (expr);                                                  \
  if (!tmp) co_return ::img::Unexpected(std::move(tmp).error());      \
  lhs = std::move(*tmp)
