/* Carrying datagrams through the daemon (docs/wire.md, "Carried datagrams"): the send
 * side puts the 36-byte envelope before the program's buffers (one sendmsg() with an
 * extra iovec, no copy) and sends to the carrier; the receive side reads into
 * [envelope, the program's buffers] and strips it from datagrams that come from the
 * carrier with a token of ours, reporting the real source. The shim knows no SOCKS. */
#ifndef SOCKSIFY_CARRY_H
#define SOCKSIFY_CARRY_H

#include <sys/socket.h>
#include <sys/types.h>

#include "datagram.h"

/* Send msg's iovecs (and control messages; msg_name is ignored) to carry's destination:
 * a WRAP grant's (carry->wrapped) to hop 1's relay, the send prefix first (or, with
 * connected, to the socket's kernel peer: the relay); else through the carrier: to the carrier's address for the socket's domain, or, with
 * connected, to the socket's kernel peer (the carrier, connect.c). fd is marked carried
 * first. Returns the payload bytes sent, or -errno (-EMSGSIZE for more than
 * UIO_MAXIOV - 1 iovecs, and for a payload 36 bytes short of the kernel's limit). */
ssize_t socksify_carry_send(int fd, const struct socksify_carry *carry,
                            const struct msghdr *msg, int flags, int connected);

/* Hop 1's relay of a WRAP answer as an address of a socket of the given domain (an
 * AF_INET6 socket reaches an IPv4 relay as ::ffff:a.b.c.d): 0, or -EAFNOSUPPORT. */
int socksify_wrap_relay(int domain, const struct socksify_wrap *w,
                        struct sockaddr_storage *to, socklen_t *tolen);

/* A send without an address on fd: if fd is connected to a carried destination, send
 * msg to it enveloped and set *handled (the answer asked again when the policy
 * generation changed: a DIRECT one connects fd to the destination itself and leaves
 * the send to the caller); else *handled is 0. Returns as socksify_carry_send(). */
ssize_t socksify_carry_send_connected(int fd, const struct msghdr *msg, int flags,
                                      int *handled);

/* A receive on fd into msg (as recvmsg()): if fd is a carried socket, *handled is set
 * and the datagram read is stripped of its envelope (see above) and its source written
 * to msg_name; an ERROR envelope fails the call with its errno on a connected socket
 * and is skipped on another. Returns the length recvmsg() would (MSG_TRUNC as asked),
 * or -errno. *handled is 0 for any other descriptor (nothing read). */
ssize_t socksify_carry_recvmsg(int fd, struct msghdr *msg, int flags, int *handled);

/* socksify_carry_recvmsg() for one buffer, the source into (from, *fromlen) as
 * recvfrom() writes it (from NULL: not asked). */
ssize_t socksify_carry_recv(int fd, void *buf, size_t len, int flags,
                            struct sockaddr *from, socklen_t *fromlen, int *handled);

/* socksify_carry_send_connected() for one buffer. */
ssize_t socksify_carry_send_one(int fd, const void *buf, size_t len, int flags,
                                int *handled);

#endif
