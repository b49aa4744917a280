/* The checks the send hooks share (docs/wire.md, "Datagram sockets"): may a datagram go
 * to this address, and what must sendto()/sendmsg() with a destination do first? */
#ifndef SOCKSIFY_DATAGRAM_H
#define SOCKSIFY_DATAGRAM_H

#include <sys/socket.h>

/* May a datagram from fd go to dest? Yes (0) without asking for a loopback address or
 * one that is not IPv4/IPv6; else the daemon decides (CONNECT, socktype 2): 0 for
 * DIRECT, the mapped -errno for FAIL (-ECONNREFUSED for code 0), -ECONNREFUSED for any
 * other verdict or a malformed reply, -ETIMEDOUT or -ECONNREFUSED when the daemon cannot
 * be asked. Fails closed. */
int socksify_dgram_check(int fd, const struct sockaddr *dest, socklen_t len);

#define SOCKSIFY_SEND_PASS     0  /* send as the app asked */
#define SOCKSIFY_SEND_FASTOPEN 1  /* a stream socket with MSG_FASTOPEN: connect first */

/* What a send on fd with destination dest and flags needs: SOCKSIFY_SEND_PASS for no
 * destination, one that is not IPv4/IPv6, a datagram the daemon allows, or a socket of
 * another type; SOCKSIFY_SEND_FASTOPEN for MSG_FASTOPEN on a stream socket (the caller
 * connects through socksify_connect_checked() and sends without the flag, so the data
 * cannot bypass the chain in the SYN); or -errno for a refused datagram. No system call
 * unless dest is an IPv4/IPv6 address. */
int socksify_send_check(int fd, const struct sockaddr *dest, socklen_t len, int flags);

#endif
