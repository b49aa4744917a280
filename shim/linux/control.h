/* The control socket: where it is, and one request/reply exchange with the daemon. */
#ifndef SOCKSIFY_CONTROL_H
#define SOCKSIFY_CONTROL_H

#include <stddef.h>
#include <sys/socket.h>

#include "socksify_wire.h"

typedef int (*socksify_connect_fn)(int fd, const struct sockaddr *addr, socklen_t len);

/* Write the control socket path (docs/wire.md: $SOCKSIFY_SOCKET, else
 * $SOCKSIFY_RUNTIME_DIR/control.sock, else $XDG_RUNTIME_DIR/socksify/control.sock, else
 * /tmp/socksify-UID/control.sock) into out. Returns 0 or -ENAMETOOLONG. */
int socksify_control_find_path(char *out, size_t outlen);

/* Send req to the daemon at socksify_config()->socket_path (whose directory must be
 * owned by getuid()), and read its reply into rep, all within the configured timeout.
 * real_connect is libc's connect. Returns 0, -ETIMEDOUT, -EPROTO for a bad or short
 * reply, -EPERM/-ENOTDIR for an unsafe directory, or another -errno. */
int socksify_control_exchange(socksify_connect_fn real_connect,
                              const struct socksify_connect_req *req,
                              struct socksify_reply *rep);

#endif
