// Unix-domain sockets named by a path of any length.
//
// sockaddr_un holds at most 107 bytes of path, and deep build or state directories pass that
// (CI's /check/work/main/build/tests/... did: vmm could not open its --control socket). Like
// systemd's connect_unix_path(), a longer name is reached through /proc/self/fd: connect opens
// the socket file with O_PATH and connects to /proc/self/fd/N; bind opens the parent directory
// with O_PATH and binds /proc/self/fd/N/BASENAME, which the kernel resolves to the same place.
// Short paths take the plain route, so nothing changes where /proc is not mounted.
//
// Each call returns like the system call it wraps: 0 (or a descriptor), or -1 with errno set
// (ENAMETOOLONG only when even the /proc route cannot name the path).
#pragma once

#include <string>

namespace img {

int unix_bind(int fd, const std::string& path);
int unix_connect(int fd, const std::string& path);
// socket(AF_UNIX, SOCK_STREAM | flags) connected to path: the descriptor, or -1 with errno.
int unix_stream_connect(const std::string& path, int flags);
// socket(AF_UNIX, SOCK_STREAM | flags) bound to path and listening: the descriptor, or -1 with
// errno (nothing is left open or bound on failure). The file's mode is 0777 less the umask.
int unix_stream_listen(const std::string& path, int flags, int backlog);

}  // namespace img
