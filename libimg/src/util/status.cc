#include "img/status.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace img {

std::string strfmt(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  std::string out;
  if (n < 0) {
    va_end(ap2);
    return out;
  }
  if (static_cast<size_t>(n) < sizeof small) {
    out.assign(small, n);
  } else {
    out.resize(n + 1);
    std::vsnprintf(out.data(), n + 1, fmt, ap2);
    out.resize(n);
  }
  va_end(ap2);
  return out;
}

static const char* code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kCorruption: return "corrupt image";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kNotSupported: return "not supported";
    case ErrorCode::kReadOnly: return "read-only";
    case ErrorCode::kNoSpace: return "no space";
    case ErrorCode::kPermission: return "permission denied";
    case ErrorCode::kLocked: return "image locked";
  }
  return "error";
}

std::string Error::to_string() const { return std::string(code_name(code_)) + ": " + message_; }

Unexpected io_error(int e, const std::string& what) {
  ErrorCode code = ErrorCode::kIo;
  if (e == ENOENT) code = ErrorCode::kNotFound;
  if (e == EACCES || e == EPERM) code = ErrorCode::kPermission;
  if (e == ENOSPC || e == EFBIG) code = ErrorCode::kNoSpace;
  if (e == EROFS) code = ErrorCode::kReadOnly;
  if (e == EOPNOTSUPP) code = ErrorCode::kNotSupported;
  return make_error(code, what + ": " + std::strerror(e), e);
}

}  // namespace img
