/* The getpeername() hook: a handed-off socket's kernel peer is hop 1 (peers.h), and a
 * relayed socket's kernel peer is the daemon's relay listener,
 * so for a stream socket with a loopback peer ask the daemon (PEERNAME, docs/wire.md)
 * what the program connected to, and report that. A read-only query that fails open:
 * for a socket the daemon does not know, or when it cannot be asked, the kernel's
 * answer stands. */

/* glibc declares getpeername() with a transparent-union argument under _GNU_SOURCE; this
 * file defines it with the plain POSIX prototype, so it is built without _GNU_SOURCE. */
#undef _GNU_SOURCE
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "config.h"
#include "control.h"
#include "init.h"
#include "log.h"
#include "peers.h"
#include "real.h"
#include "socksify_wire.h"

/* The port of an AF_INET/AF_INET6 address (host order). */
static uint16_t addr_port(const struct sockaddr_storage *ss, int family)
{
    uint16_t port_be;

    memcpy(&port_be, (const char *)ss + (family == AF_INET
                                         ? offsetof(struct sockaddr_in, sin_port)
                                         : offsetof(struct sockaddr_in6, sin6_port)), 2);
    return ntohs(port_be);
}

/* Write the daemon's answer into the caller's buffer in the socket's family, truncated
 * to in_len as the kernel does, and the full size into *len. -EAFNOSUPPORT if the
 * socket's family cannot express it. */
static int write_peer(int domain, const struct socksify_peer *peer, struct sockaddr *addr,
                      socklen_t in_len, socklen_t *len)
{
    struct sockaddr_storage ss;
    socklen_t full;
    int r = socksify_addr_of_peer(domain, peer, &ss, &full);

    if (r < 0)
        return r;
    memcpy(addr, &ss, in_len < full ? in_len : full);
    *len = full;
    return 0;
}

/* The hook's logic; returns 0 or -errno. The caller's buffer holds the kernel's answer
 * unless the daemon names the socket's original destination. */
static int socksify_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    struct sockaddr_storage kernel, local;
    socklen_t in_len, kernel_len, local_len = sizeof local, optlen;
    struct socksify_connect_req req;
    struct socksify_peer peer;
    struct socksify_reply rep;
    uint8_t reply[SOCKSIFY_REPLY_SIZE];
    uint16_t port, port4, port6;
    int family, type, r;

    if (len == NULL)  /* the kernel's EFAULT */
        return socksify_real.getpeername(fd, addr, len) == 0 ? 0 : -errno;
    in_len = *len;
    if (socksify_real.getpeername(fd, addr, len) < 0)
        return -errno;
    kernel_len = in_len;
    if (socksify_peer_lookup(fd, addr, &kernel_len) == 0) {
        *len = kernel_len;  /* a handed-off socket: the destination it asked for */
        return 0;
    }
    /* The kernel's peer in full: the caller's buffer may hold a truncated copy. */
    kernel_len = *len;
    if (kernel_len <= in_len && kernel_len <= sizeof kernel) {
        memcpy(&kernel, addr, kernel_len);
    } else {
        kernel_len = sizeof kernel;
        if (socksify_real.getpeername(fd, (struct sockaddr *)&kernel, &kernel_len) < 0)
            return 0;
    }
    family = socksify_addr_family((const struct sockaddr *)&kernel, kernel_len);
    if (family == 0 || !socksify_addr_is_loopback((const struct sockaddr *)&kernel,
                                                  kernel_len))
        return 0;  /* not IPv4/IPv6, or not connected to this host: not relayed */
    port = addr_port(&kernel, family);
    socksify_relay_ports(&port4, &port6);
    if ((port4 != 0 || port6 != 0) && port != port4 && port != port6)
        return 0;  /* a local service, not the daemon's relay */
    optlen = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0 || type != SOCK_STREAM)
        return 0;
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) < 0)
        return 0;
    /* The local end as the daemon sees it: a v4-mapped address becomes family 4. */
    if (socksify_addr_fill_request((const struct sockaddr *)&local, local_len,
                                   SOCKSIFY_SOCKTYPE_STREAM, socksify_config()->session,
                                   &req) < 0)
        return 0;
    r = socksify_control_request(SOCKSIFY_OP_PEERNAME, &req, reply);
    if (r < 0) {
        LOG_DEBUG("fd %d: no PEERNAME answer (%s); reporting the kernel's peer", fd,
                  socksify_strerror(-r));
        return 0;
    }
    if (socksify_wire_decode_peer(reply, sizeof reply, &peer) < 0) {
        if (socksify_wire_decode_reply(reply, sizeof reply, &rep) == 0
            && rep.verdict == SOCKSIFY_VERDICT_FAIL)
            LOG_DEBUG("fd %d: not a relayed socket (FAIL code %u)", fd, rep.code);
        else
            LOG_WARN("fd %d: unexpected answer to PEERNAME (starts %02x%02x%02x%02x %02x "
                     "%02x); reporting the kernel's peer", fd, reply[0], reply[1],
                     reply[2], reply[3], reply[SOCKSIFY_REP_OFF_VERSION],
                     reply[SOCKSIFY_REP_OFF_VERDICT]);
        return 0;
    }
    if (write_peer(family, &peer, addr, in_len, len) < 0) {
        LOG_DEBUG("fd %d: an IPv6 destination cannot be reported on an IPv4 socket", fd);
        return 0;
    }
    LOG_DEBUG("fd %d: relayed socket, reporting its original destination", fd);
    return 0;
}

SOCKSIFY_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    int saved_errno = errno, r;

    socksify_init();
    r = socksify_getpeername(fd, addr, len);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    errno = saved_errno;
    return 0;
}
