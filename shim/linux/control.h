/* The control socket: where it is, one request/reply exchange with the daemon, and the
 * daemon's relay ports as last seen in a RELAY reply. */
#ifndef SOCKSIFY_CONTROL_H
#define SOCKSIFY_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "socksify_wire.h"

/* Send req with op (SOCKSIFY_OP_*) to the daemon at socksify_config()->socket_path
 * (whose directory must be owned by getuid()), and read the 32 reply bytes into reply,
 * undecoded, all within the configured timeout (at most 5 s for PEERNAME). Returns 0,
 * -ETIMEDOUT, -EPROTO for a short reply, -EPERM/-ENOTDIR for an unsafe directory, or another -errno. Failures are logged as warnings for
 * CONNECT and RESOLVE, and only at debug level for PEERNAME (getpeername() falls back
 * quietly). */
int socksify_control_request(unsigned op, const struct socksify_connect_req *req,
                             uint8_t reply[SOCKSIFY_REPLY_SIZE]);

/* Send an encoded request (the header and its body, len bytes, as written by
 * socksify_wire_encode_resolve()) and read the 32 reply bytes into reply, undecoded: as
 * socksify_control_request(), with the timeout and log level its op byte calls for.
 * -EINVAL if len is shorter than a header. */
int socksify_control_send(const uint8_t *request, size_t len, uint8_t reply[SOCKSIFY_REPLY_SIZE]);

/* As socksify_control_send(), for a request whose reply may carry a body (NAMEOF): the
 * reply (up to replymax bytes, at least 32) is read into reply, a NAME reply's head and
 * then its body_len bytes of name; every other reply is its 32 bytes. The timeout is at
 * most 5 s for NAMEOF, as for PEERNAME. Returns the reply's length, or -errno (-EPROTO
 * also for a name longer than replymax allows). */
int socksify_control_send_reply(const uint8_t *request, size_t len, uint8_t *reply, size_t replymax);

/* A CONNECT request for req, its reply decoded into rep: as socksify_control_request(),
 * and -EPROTO (logged) for a malformed reply. */
int socksify_control_exchange(const struct socksify_connect_req *req,
                              struct socksify_reply *rep);

/* A HANDOFF request for req with the program's socket app_fd attached (SCM_RIGHTS),
 * its reply decoded into rep; a descriptor that came with the reply (SWAP) is stored
 * close-on-exec in *passed_fd, else -1. Otherwise as socksify_control_exchange(). */
int socksify_control_handoff(const struct socksify_connect_req *req, int app_fd,
                             struct socksify_reply *rep, int *passed_fd);

/* A WRAP request for req (socktype datagram) with the program's UDP socket app_fd
 * attached (docs/wire.md, "Datagram handoff: WRAP"); the reply, undecoded, into reply
 * (up to replymax bytes): a WRAP reply's head and body, any other its 32 bytes.
 * Returns the reply's length or -errno, as socksify_control_send_reply(). */
int socksify_control_wrap(const struct socksify_connect_req *req, int app_fd,
                          uint8_t *reply, size_t replymax);

/* An UNWRAP request (docs/wire.md, "Datagram handoff: WRAP") with the program's UDP
 * socket app_fd attached, req its local address: 0 when the daemon answered READY, else
 * -errno (-EPROTO for another answer). */
int socksify_control_unwrap(const struct socksify_connect_req *req, int app_fd);

/* Remember the relay ports of a RELAY reply (atomically; any thread). */
void socksify_relay_ports_note(uint16_t port4, uint16_t port6);

/* The relay ports last noted in this process (0 and 0 if none yet, e.g. after exec). */
void socksify_relay_ports(uint16_t *port4, uint16_t *port6);

#endif
