/* Pure helpers on socket addresses: loopback test, v4-mapped unwrapping, filling a
 * CONNECT request, formatting one for logs, building the relay address. No I/O, no
 * libc state. */
#ifndef SOCKSIFY_ADDR_H
#define SOCKSIFY_ADDR_H

#include <stddef.h>
#include <stdint.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef ADDRESS_FAMILY sa_family_t;
#else
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include "socksify_wire.h"

/* AF_INET or AF_INET6 if sa is a complete address of that family (len covers the port
 * and the address), else 0. */
int socksify_addr_family(const struct sockaddr *sa, unsigned len);

/* 1 if sa is an IPv4 or IPv6 address that stays on this host: 127.0.0.0/8, 0.0.0.0,
 * ::1, :: and their IPv4-mapped forms (::ffff:127.0.0.0/104, ::ffff:0.0.0.0); else 0. */
SOCKSIFY_EXPORT int socksify_addr_is_loopback(const struct sockaddr *sa, unsigned len);

/* 1 and the IPv4 address in v4 if a6 is IPv4-mapped (::ffff:a.b.c.d), else 0. */
int socksify_addr_unmap_v4(const uint8_t a6[16], uint8_t v4[4]);

/* Fill req's family, port and addr from sa (IPv4-mapped IPv6 becomes family 4), and its
 * socktype and session. Returns 0, or -EAFNOSUPPORT if sa is not a complete
 * AF_INET/AF_INET6 address. */
int socksify_addr_fill_request(const struct sockaddr *sa, unsigned len, uint8_t socktype,
                               const uint8_t session[SOCKSIFY_SESSION_SIZE],
                               struct socksify_connect_req *req);

/* What a socket of this SO_DOMAIN, SO_TYPE and SO_PROTOCOL is to the shim. */
#define SOCKSIFY_KIND_NOT_IP 0  /* not AF_INET/AF_INET6: none of the shim's business */
#define SOCKSIFY_KIND_STREAM 1  /* TCP or MPTCP (a TCP connection to hop 1 for the
                                   daemon): handed to the daemon */
#define SOCKSIFY_KIND_DGRAM  2  /* UDP or UDP-Lite: the daemon allows (DIRECT) or not */
#define SOCKSIFY_KIND_OTHER  3  /* anything else (SCTP, DCCP, raw, ICMP "ping",
                                   SEQPACKET, RDM, ...): the daemon cannot carry it; it
                                   may reach loopback only */
int socksify_sock_kind(int domain, int type, int protocol);

/* What destination the kernel takes from (sa, len) on a socket of this domain. */
#define SOCKSIFY_DEST_NONE    0  /* none: no address (a send goes to the connected
                                    peer), AF_UNSPEC in connect() (disconnects), or
                                    AF_UNSPEC in a send on an AF_INET6 socket (UDP: the
                                    connected peer; other protocols reject it) */
#define SOCKSIFY_DEST_ADDR    1  /* *out: the IPv4 or IPv6 address the kernel uses */
#define SOCKSIFY_DEST_UNKNOWN 2  /* anything else: cannot be judged, refused */
#define SOCKSIFY_DEST_SEND    0  /* op: sendto(), sendmsg(), sendmmsg() */
#define SOCKSIFY_DEST_CONNECT 1  /* op: connect() */

/* Classify (sa, len) as the kernel reads it for op on a socket of domain
 * (AF_INET/AF_INET6): an AF_INET address (on either domain: an AF_INET6 UDP socket
 * sends to it over IPv4) or an AF_INET6 one is copied to *out; AF_UNSPEC in a send on an
 * AF_INET socket is copied as the AF_INET address the kernel makes of it (udp_sendmsg
 * and raw_sendmsg read it as one). *out and *outlen are written for DEST_ADDR only. */
int socksify_addr_dest(int domain, int op, const struct sockaddr *sa, unsigned len,
                       struct sockaddr_storage *out, unsigned *outlen);

/* Room for socksify_addr_format(): "[" INET6_ADDRSTRLEN "]:65535". */
#define SOCKSIFY_ADDR_TEXT_SIZE (INET6_ADDRSTRLEN + 8)

/* "a.b.c.d:port" or "[v6]:port" for req's address, for log lines (truncated to len). */
void socksify_addr_format(const struct socksify_connect_req *req, char *buf, size_t len);

/* The relay address docs/wire.md names for a socket of the given domain: AF_INET
 * 127.0.0.1:relay_port4; AF_INET6 [::1]:relay_port6, or [::ffff:127.0.0.1]:relay_port4
 * when relay_port6 is 0. Writes out and *outlen; returns 0, or -EPROTO when the port it
 * needs is 0, -EAFNOSUPPORT for another domain. */
int socksify_addr_relay(int domain, const struct socksify_reply *rep,
                        struct sockaddr_storage *out, socklen_t *outlen);

/* The daemon's PEERNAME answer as an address of a socket of the given domain (an
 * AF_INET6 socket reports an IPv4 destination as ::ffff:a.b.c.d). Writes out and
 * *outlen; returns 0, or -EAFNOSUPPORT if the domain cannot express it (an IPv6
 * destination on an AF_INET socket). */
int socksify_addr_of_peer(int domain, const struct socksify_peer *peer,
                          struct sockaddr_storage *out, socklen_t *outlen);

#endif
