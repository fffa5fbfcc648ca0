// The listening side of img-nbd: accepts clients on one socket (unix or TCP), serves each with
// an NBD session on the shared IoLoop, and ends as qemu-nbd does: after the last client leaves
// (unless persistent), or on SIGTERM / SIGINT / SIGHUP.
//
// Thread-safety: one IoLoop thread; the signal handler only writes to an eventfd.
#pragma once

#include <memory>
#include <set>
#include <string>

#include "img/io_loop.h"
#include "nbd/session.h"
#include "nbd/socket_conn.h"
#include "util/async.h"

namespace imgnbd {

struct ListenSpec {
  std::string unix_path;  // -k; else TCP on bind_addr:port
  std::string bind_addr = "0.0.0.0";
  std::string port = "10809";
};

// Binds and listens; returns the socket, or an error naming the address.
img::Result<int> listen_on(const ListenSpec& spec);

class Server {
 public:
  // shared: at most this many clients at once (0: no limit); persistent: keep serving after the
  // last client leaves.
  Server(img::IoLoop& loop, int listen_fd, const img::nbd::ExportConfig& exp, unsigned shared,
         bool persistent, bool verbose);
  ~Server();
  // Installs the signal handlers that stop the server (before run()).
  img::Status install_signals();
  // Serves until done; every client has finished when it returns.
  img::Task<void> run();

 private:
  img::Task<void> accept_loop();
  img::Task<void> stop_watch();
  img::Task<void> client(int fd, unsigned id);
  void request_stop();

  img::IoLoop& loop_;
  int listen_fd_;
  int stop_fd_ = -1;
  const img::nbd::ExportConfig& exp_;
  unsigned shared_;
  bool persistent_;
  bool verbose_;
  bool stopping_ = false;
  unsigned clients_ = 0;
  unsigned next_id_ = 1;
  std::set<img::nbd::SocketConn*> conns_;
  img::WaitList changed_;  // a client came or went, or stopping began
};

}  // namespace imgnbd
