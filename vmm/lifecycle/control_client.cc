#include "lifecycle/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "img/unix_socket.h"

namespace vmm::lifecycle {

using Json = nlohmann::json;

img::Result<ControlClient> ControlClient::connect(const std::string& path, int timeout_ms) {
  int fd = img::unix_stream_connect(path, SOCK_CLOEXEC);
  if (fd < 0) return img::io_error(errno, "connecting to " + path);
  ControlClient c(fd, timeout_ms);
  ASSIGN_OR_RETURN(std::string greeting, c.read_line());
  // A Busy error comes instead of the greeting when another client holds the socket.
  try {
    Json g = Json::parse(greeting);
    if (g.contains("error")) {
      return img::io_error(EBUSY, g["error"].value("desc", std::string("control socket busy")));
    }
    if (!g.contains("greeting")) return img::invalid_argument(path + " did not greet as vmm does");
  } catch (const Json::exception&) {
    return img::invalid_argument(path + " sent a greeting that is not JSON");
  }
  return c;
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) ::close(fd_);
}

img::Result<std::string> ControlClient::read_line() {
  for (;;) {
    size_t nl = in_.find('\n');
    if (nl != std::string::npos) {
      std::string line = in_.substr(0, nl);
      in_.erase(0, nl + 1);
      return line;
    }
    if (in_.size() > (1u << 20)) return img::invalid_argument("control reply line too long");
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return img::io_error(ETIMEDOUT, "waiting for the control socket's reply");
    char buf[4096];
    ssize_t r = ::read(fd_, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return img::io_error(errno, "reading the control socket");
    if (r == 0) return img::io_error(ECONNRESET, "the control socket closed before replying");
    in_.append(buf, static_cast<size_t>(r));
  }
}

img::Result<Json> ControlClient::call(const std::string& command, const Json& arguments) {
  Json req = {{"execute", command}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  std::string line = req.dump() + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t w = ::send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return img::io_error(errno, "writing the control socket");
    off += static_cast<size_t>(w);
  }
  ASSIGN_OR_RETURN(std::string reply, read_line());
  try {
    Json j = Json::parse(reply);
    if (j.contains("return")) return j["return"];
    if (j.contains("error")) {
      std::string cls = j["error"].value("class", std::string());
      std::string desc = j["error"].value("desc", std::string("error"));
      if (cls == "WrongState" || cls == "InvalidArgument") return img::invalid_argument(desc);
      return img::invalid_argument(cls + ": " + desc);
    }
  } catch (const Json::exception&) {
  }
  return img::invalid_argument("the control socket sent an unexpected reply: " + reply);
}

}  // namespace vmm::lifecycle
