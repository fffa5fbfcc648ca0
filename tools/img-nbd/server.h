// The listening side of img-nbd: accepts clients on one socket (unix or TCP), serves each with
// an NBD session on the shared IoLoop, and ends as qemu-nbd does: after the last client leaves
// (unless persistent), or on SIGTERM / SIGINT / SIGHUP.
//
// A client that connects and then does not finish the handshake within the handshake limit is
// disconnected (qemu-nbd's --handshake-limit, 10 s by default since QEMU 9.1; CVE-2024-7409):
// with -e 1 such a client would otherwise keep every other one out for as long as it liked.
//
// Thread-safety: one IoLoop thread; the signal handler only writes to an eventfd.
#pragma once

#include <chrono>
#include <map>
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

struct ServerOptions {
  unsigned shared = 1;        // at most this many clients at once (0: no limit)
  bool persistent = false;    // keep serving after the last client leaves
  bool verbose = false;       // log clients connecting and leaving
  unsigned handshake_s = 10;  // seconds a client has to finish the handshake (0: no limit)
};

class Server {
 public:
  Server(img::IoLoop& loop, int listen_fd, const img::nbd::ExportConfig& exp,
         const ServerOptions& opts);
  ~Server();
  // Installs the signal handlers that stop the server (before run()).
  img::Status install_signals();
  // Serves until done; every client has finished when it returns.
  img::Task<void> run();

 private:
  img::Task<void> accept_loop();
  img::Task<void> stop_watch();
  img::Task<void> client(int fd, unsigned id);
  // Once a second: closes the connections whose handshake is past its deadline.
  img::Task<void> handshake_reaper();
  void request_stop();

  img::IoLoop& loop_;
  int listen_fd_;
  int stop_fd_ = -1;
  const img::nbd::ExportConfig& exp_;
  ServerOptions opts_;
  bool stopping_ = false;
  bool reaper_running_ = false;
  int tick_fd_ = -1;  // the reaper's timerfd
  unsigned clients_ = 0;
  unsigned next_id_ = 1;
  std::set<img::nbd::SocketConn*> conns_;
  struct Handshake {
    std::chrono::steady_clock::time_point deadline;
    bool* timed_out;
  };
  std::map<img::nbd::SocketConn*, Handshake> handshaking_;
  img::WaitList changed_;  // a client came or went, or stopping began
};

}  // namespace imgnbd
