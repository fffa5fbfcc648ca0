// ControlServer: the VMM's control socket (`vmm run --control PATH`), a unix stream socket that
// serves one client at a time with the line protocol of control_protocol.h on the main thread's
// EventLoop. A second client that connects while one is served gets one Busy error line and is
// closed; a client that vanishes (mid-reply included) is dropped, never a crash: replies go out
// with MSG_NOSIGNAL, and a client that does not read its replies is dropped once kMaxPendingOut
// bytes wait for it.
//
// The socket is created mode 0600 (only the VMM's user may control the VM). A path left over
// from a dead VMM (nobody accepts on it) is replaced; a live socket or a file that is not a
// socket is an error, so two VMs never share a control path.
//
// Thread-safety: one thread (the EventLoop's).
#pragma once

#include <memory>
#include <string>

#include "api/control_protocol.h"
#include "api/event_loop.h"
#include "img/status.h"

namespace vmm::api {

class ControlServer {
 public:
  static constexpr size_t kMaxPendingOut = 1 << 20;

  // Binds and listens now (so a bad path fails before the guest boots). d must outlive it.
  static img::Result<std::unique_ptr<ControlServer>> listen(const std::string& path,
                                                            const Dispatcher& d);
  ~ControlServer();  // closes the client and the socket and removes the path
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Starts serving on loop, which must outlive this server.
  img::Status attach(EventLoop& loop);
  bool has_client() const { return client_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  ControlServer(std::string path, int fd, const Dispatcher& d)
      : path_(std::move(path)), listen_fd_(fd), dispatcher_(d) {}
  void on_accept();
  void on_client(uint32_t events);
  void send(const std::string& s);
  void flush_out();
  void drop_client();

  const std::string path_;
  int listen_fd_;
  const Dispatcher& dispatcher_;
  EventLoop* loop_ = nullptr;
  int client_ = -1;
  LineBuffer in_;
  std::string out_;
};

}  // namespace vmm::api
