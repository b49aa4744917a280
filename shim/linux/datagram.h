/* The checks the send hooks share (docs/wire.md, "Datagram sockets"): may a datagram go
 * to this address, and what must sendto()/sendmsg() with a destination do first? */
#ifndef SOCKSIFY_DATAGRAM_H
#define SOCKSIFY_DATAGRAM_H

#include <sys/socket.h>

#include "socksify_wire.h"

/* A CARRY answer for a datagram destination (docs/wire.md, "Carried datagrams"), or a
 * WRAP one ("Datagram handoff: WRAP"): then wrapped is 1 and wrap holds it. */
struct socksify_carry {
    struct socksify_connect_req req;  /* the destination, as asked about */
    struct socksify_reply rep;        /* the answer: carrier ports, generation, token */
    int domain;                       /* the sending socket's (socksify_send_check) */
    int wrapped;                      /* WRAP: send to hop 1's relay with the prefix */
    struct socksify_wrap wrap;
};

#define SOCKSIFY_DGRAM_CARRY 1   /* carry filled: CARRY, or (carry->wrapped) WRAP */

/* May a datagram from fd go to dest, and how? Yes (0) without asking for a loopback
 * address or one that is not IPv4/IPv6; else the daemon decides (CONNECT, socktype 2;
 * with carry, first a WRAP with fd attached, once per socket and destination, whose
 * WRAP answer is kept in fd's carried entry while its generation holds), or a cached
 * DIRECT or CARRY answer: 0 for DIRECT, SOCKSIFY_DGRAM_CARRY (carry's req
 * and rep filled) for CARRY when carry is not NULL, the mapped -errno for FAIL
 * (-ECONNREFUSED for code 0), -ECONNREFUSED for any other verdict (CARRY too without
 * carry) or a malformed reply, -ETIMEDOUT or -ECONNREFUSED when the daemon cannot be
 * asked. Fails closed. */
int socksify_dgram_decide(int fd, const struct sockaddr *dest, socklen_t len,
                          struct socksify_carry *carry);

/* The socket's SOCKSIFY_KIND_* (addr.h) from SO_DOMAIN, SO_TYPE and SO_PROTOCOL, with its
 * domain in *domain; -errno if fd is not a socket (the real call reports it). */
int socksify_fd_kind(int fd, int *domain);

/* Log that fd (a socket of SOCKSIFY_KIND_OTHER, or one given an address the shim cannot
 * judge) may not reach dest (len 0: unknown), and return -EACCES. */
int socksify_refuse_kind(int fd, const struct sockaddr *dest, unsigned len);

#define SOCKSIFY_SEND_PASS     0  /* send as the app asked */
#define SOCKSIFY_SEND_FASTOPEN 1  /* a stream socket with MSG_FASTOPEN: connect first */
#define SOCKSIFY_SEND_CARRY    2  /* a datagram the daemon carries: *carry says how */

/* What a send on fd with destination (dest, len) and flags needs, judged by what the
 * kernel will do with them (the socket's domain, type and protocol and the address's
 * bytes, addr.h socksify_addr_dest(): AF_UNSPEC on an AF_INET socket is an IPv4
 * address, an AF_INET address on an AF_INET6 UDP socket is sent over IPv4):
 * SOCKSIFY_SEND_PASS for no destination, a socket that is not IPv4/IPv6, a loopback
 * destination, a stream socket without MSG_FASTOPEN (the kernel ignores the address), or
 * a datagram the daemon allows; SOCKSIFY_SEND_CARRY (carry filled, its domain too) for
 * one it carries; SOCKSIFY_SEND_FASTOPEN for MSG_FASTOPEN with an address
 * on a stream socket (the caller connects through socksify_connect_checked() and sends
 * without the flag, so the data cannot bypass the chain in the SYN); -EACCES for any
 * other socket kind (SCTP, DCCP, raw, ICMP, ...) to a non-loopback address, or an
 * address the shim cannot judge; or the -errno of a refused datagram. No system call
 * without a destination or for an AF_INET/AF_INET6 loopback one (without
 * MSG_FASTOPEN). */
int socksify_send_check(int fd, const struct sockaddr *dest, socklen_t len, int flags,
                        struct socksify_carry *carry);

#endif
