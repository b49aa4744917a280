/* The connect() hook: hand every IPv4/IPv6 stream socket that connects off the host to
 * the daemon with the question (HANDOFF), then go direct, fail, take the socket back
 * connected through the chain (READY), put a pre-built tunnel in its place (SWAP), or
 * connect it to the daemon's relay, as the verdict says (docs/wire.md). A TCP or MPTCP
 * socket is a stream socket here (MPTCP reaches hop 1 as TCP does). A UDP socket's
 * connect() is asked about too (socktype 2), and only DIRECT lets it connect. Any other
 * IPv4/IPv6 socket (SCTP, DCCP, raw, ICMP, SEQPACKET) may connect to loopback only
 * (EACCES otherwise), and an address the shim cannot read as the kernel will is refused
 * (EACCES); AF_UNSPEC, which dissolves an association, passes. A cached DIRECT answer
 * (cache.h) is used without asking. Fails closed: never a direct connection the daemon
 * did not allow. */

/* glibc declares connect() with a transparent-union argument under _GNU_SOURCE; this
 * file defines it with the plain POSIX prototype, so it is built without _GNU_SOURCE. */
#undef _GNU_SOURCE
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"
#include "cache.h"
#include "carried.h"
#include "carry.h"
#include "config.h"
#include "connect.h"
#include "control.h"
#include "datagram.h"
#include "init.h"
#include "io.h"
#include "log.h"
#include "peers.h"
#include "real.h"
#include "socksify_wire.h"

/* How long a non-blocking connect to the local relay may take. */
#define RELAY_TIMEOUT_MS 10000

static int connect_direct(int fd, const struct sockaddr *addr, socklen_t len)
{
    return socksify_real.connect(fd, addr, len) == 0 ? 0 : -errno;
}

/* Connect the app's own socket to the relay and hand over the token. */
static int connect_relay(int fd, int domain, const struct socksify_reply *rep,
                         const char *dest)
{
    struct sockaddr_storage relay;
    socklen_t relay_len;
    int64_t deadline = socksify_now_ms() + RELAY_TIMEOUT_MS;
    int r;

    if ((r = socksify_addr_relay(domain, rep, &relay, &relay_len)) < 0) {
        LOG_WARN("%s: RELAY reply without a relay port for this socket", dest);
        return r;
    }
    if (socksify_real.connect(fd, (const struct sockaddr *)&relay, relay_len) < 0) {
        r = -errno;
        /* Non-blocking socket, or a blocking one interrupted by a signal: the connect
         * goes on in the background; wait for it. */
        if (r == -EINPROGRESS || r == -EINTR) {
            r = socksify_wait_fd(fd, POLLOUT, deadline);
            if (r == 0)
                r = socksify_socket_error(fd);
        }
        if (r < 0) {
            LOG_WARN("%s: cannot connect to the socksify relay: %s", dest,
                     socksify_strerror(-r));
            return r;
        }
    }
    if ((r = socksify_send_all(fd, rep->token, sizeof rep->token, deadline)) < 0) {
        LOG_WARN("%s: cannot send the token to the socksify relay: %s", dest,
                 socksify_strerror(-r));
        return r;
    }
    return 0;
}

/* A UDP socket connect()ed to a carried destination: connect it to the carrier, so the
 * kernel takes datagrams from the carrier only (as from a real peer), and remember
 * the destination for its sends and getpeername() (docs/wire.md, "Carried
 * datagrams"). */
static int connect_carrier(int fd, int domain, const struct socksify_carry *carry,
                           const struct sockaddr *addr, socklen_t len)
{
    struct sockaddr_storage to;
    socklen_t tolen;

    if (carry->wrapped) {
        /* a datagram handoff: the kernel connects to hop 1's relay, which the
         * program's datagrams go to with the send prefix (docs/wire.md) */
        struct socksify_wrapgrant g;

        g.req = carry->req;
        g.w = carry->wrap;
        if (socksify_wrap_relay(domain, &carry->wrap, &to, &tolen) < 0)
            return -ENETUNREACH;
        if (socksify_real.connect(fd, (const struct sockaddr *)&to, tolen) < 0)
            return -errno;
        socksify_carried_connect_wrap(fd, addr, len, &g);
        socksify_peer_note(fd, addr, len);
        LOG_DEBUG("fd %d: UDP connected through hop 1's relay (port %u)", fd,
                  carry->wrap.port);
        return 0;
    }
    if (socksify_addr_relay(domain, &carry->rep, &to, &tolen) < 0)
        return -ECONNREFUSED;
    if (socksify_real.connect(fd, (const struct sockaddr *)&to, tolen) < 0)
        return -errno;
    socksify_carried_connect(fd, addr, len, &carry->req, &carry->rep);
    socksify_peer_note(fd, addr, len);
    LOG_DEBUG("fd %d: UDP connected through the carrier (port %u/%u)", fd,
              carry->rep.relay_port4, carry->rep.relay_port6);
    return 0;
}

/* The options a program may have set on its socket before connect(), carried over to a
 * pre-built tunnel's socket that takes its place (SWAP). Values are copied only where
 * they differ, so the kernel's defaults (and buffer autotuning) stay untouched. */
static const struct {
    int level, name, family;   /* family 0: either */
} carried[] = {
    {SOL_SOCKET, SO_KEEPALIVE, 0}, {SOL_SOCKET, SO_PRIORITY, 0},
    {SOL_SOCKET, SO_OOBINLINE, 0}, {SOL_SOCKET, SO_MARK, 0},
    {SOL_SOCKET, SO_RCVBUF, 0}, {SOL_SOCKET, SO_SNDBUF, 0}, {SOL_SOCKET, SO_RCVLOWAT, 0},
    {SOL_SOCKET, SO_LINGER, 0}, {SOL_SOCKET, SO_RCVTIMEO, 0}, {SOL_SOCKET, SO_SNDTIMEO, 0},
    {IPPROTO_TCP, TCP_NODELAY, 0}, {IPPROTO_TCP, TCP_KEEPIDLE, 0},
    {IPPROTO_TCP, TCP_KEEPINTVL, 0}, {IPPROTO_TCP, TCP_KEEPCNT, 0},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, 0},
    {IPPROTO_IP, IP_TOS, AF_INET}, {IPPROTO_IPV6, IPV6_TCLASS, AF_INET6},
};

static void carry_options(int from, int to, int domain, const char *dest)
{
    size_t i;

    for (i = 0; i < sizeof carried / sizeof carried[0]; i++) {
        union {
            int i;
            struct linger l;
            struct timeval t;
        } want, have;
        socklen_t wlen = sizeof want, hlen = sizeof have;
        int level = carried[i].level, name = carried[i].name;

        if (carried[i].family != 0 && carried[i].family != domain)
            continue;
        memset(&want, 0, sizeof want);
        memset(&have, 0, sizeof have);
        if (getsockopt(from, level, name, &want, &wlen) < 0
            || getsockopt(to, level, name, &have, &hlen) < 0
            || (wlen == hlen && memcmp(&want, &have, wlen) == 0))
            continue;
        /* The kernel reports buffer sizes doubled (bookkeeping) and doubles what it
         * is given. */
        if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF))
            want.i /= 2;
        if (setsockopt(to, level, name, &want, wlen) < 0)
            LOG_DEBUG("%s: option %d/%d not carried to the pre-built tunnel: %s", dest,
                      level, name, socksify_strerror(errno));
    }
}

/* SWAP: put the pre-built tunnel's socket `passed` in place of the program's fd, with
 * the program's options, file status flags and close-on-exec flag; passed is closed. */
static int swap_in(int fd, int passed, int domain, int flags, const char *dest)
{
    int fdflags = fcntl(fd, F_GETFD), r = 0;

    carry_options(fd, passed, domain, dest);
    if (fdflags < 0 || fcntl(passed, F_SETFL, flags) < 0
        || dup2(passed, fd) < 0 || fcntl(fd, F_SETFD, fdflags) < 0) {
        r = -errno;
        LOG_WARN("%s: cannot put the pre-built tunnel in place of fd %d: %s", dest, fd,
                 socksify_strerror(-r));
    }
    close(passed);
    return r;
}

/* The daemon had the program's socket (HANDOFF) and may have made it non-blocking:
 * give it back its file status flags exactly as they were. */
static void restore_flags(int fd, int flags)
{
    int now = fcntl(fd, F_GETFL);

    if (now >= 0 && now != flags)
        fcntl(fd, F_SETFL, flags);
}

/* The hook's logic; returns 0 or -errno. */
int socksify_connect_checked(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct socksify_connect_req req;
    struct socksify_reply rep;
    struct sockaddr_storage peer;
    struct sockaddr_storage to;
    socklen_t peer_len = sizeof peer;
    unsigned tolen;
    int family, kind, domain, loopback, flags, passed, r, err;
    char dest[SOCKSIFY_ADDR_TEXT_SIZE];

    kind = socksify_fd_kind(fd, &domain);
    if (kind < 0 || kind == SOCKSIFY_KIND_NOT_IP)
        return connect_direct(fd, addr, len);  /* EBADF/ENOTSOCK, or not IPv4/IPv6 */
    switch (socksify_addr_dest(domain, SOCKSIFY_DEST_CONNECT, addr, len, &to, &tolen)) {
    case SOCKSIFY_DEST_NONE:
        socksify_carried_disconnect(fd);
        return connect_direct(fd, addr, len);  /* AF_UNSPEC: dissolves the association */
    case SOCKSIFY_DEST_ADDR:
        break;
    default:
        return socksify_refuse_kind(fd, NULL, 0);
    }
    family = to.ss_family;
    loopback = socksify_addr_is_loopback((const struct sockaddr *)&to, tolen);
    if (kind == SOCKSIFY_KIND_DGRAM) {
        /* No domain check: an AF_INET6 UDP socket may connect to an AF_INET address. A
         * connected UDP socket may connect again, to another address: asked again. */
        struct socksify_carry carry;
        int was_carried = socksify_carried_maybe(fd);

        socksify_carried_disconnect(fd);
        r = socksify_dgram_decide(fd, (const struct sockaddr *)&to, tolen, &carry);
        if (r == SOCKSIFY_DGRAM_CARRY)
            return connect_carrier(fd, domain, &carry, addr, len);
        if (r < 0)
            return r;
        if ((r = connect_direct(fd, addr, len)) == 0 && was_carried)
            socksify_peer_note(fd, addr, len);  /* no longer the carried peer noted */
        return r;
    }
    if (kind != SOCKSIFY_KIND_STREAM) {
        /* SCTP, DCCP, raw, ICMP, SEQPACKET...: the daemon cannot carry them. */
        return loopback ? connect_direct(fd, addr, len)
                        : socksify_refuse_kind(fd, (const struct sockaddr *)&to, tolen);
    }
    if (domain != family)
        return -EAFNOSUPPORT;  /* as tcp_v4_connect()/tcp_v6_connect() answer it */
    if (loopback && !socksify_config()->proxy_loopback) {
        LOG_DEBUG("fd %d: loopback destination, connecting directly", fd);
        return connect_direct(fd, addr, len);
    }
    if (socksify_real.getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0)
        return connect_direct(fd, addr, len);  /* already connected: EISCONN */

    r = socksify_addr_fill_request(addr, len, SOCKSIFY_SOCKTYPE_STREAM,
                                   socksify_config()->session,
                                   &req);
    if (r < 0)
        return -ECONNREFUSED;
    if (socksify_cache_direct(&req)) {
        LOG_DEBUG("fd %d: DIRECT (cached)", fd);
        return connect_direct(fd, addr, len);
    }
    socksify_addr_format(&req, dest, sizeof dest);
    if ((flags = fcntl(fd, F_GETFL)) < 0)
        return -errno;
    r = socksify_control_handoff(&req, fd, &rep, &passed);
    restore_flags(fd, flags);
    if (r < 0) {
        LOG_WARN("%s: no verdict from the socksify daemon (%s); refusing the connection",
                 dest, socksify_strerror(-r));
        return r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;  /* never direct */
    }
    switch (rep.verdict) {
    case SOCKSIFY_VERDICT_DIRECT:
        LOG_INFO("%s: DIRECT", dest);
        socksify_cache_note(&req, &rep);
        return connect_direct(fd, addr, len);
    case SOCKSIFY_VERDICT_READY:
        LOG_INFO("%s: READY (connected through the chain on fd %d)", dest, fd);
        socksify_peer_note(fd, addr, len);
        return 0;
    case SOCKSIFY_VERDICT_SWAP:
        if (passed < 0) {
            LOG_WARN("%s: SWAP without a socket; refusing the connection", dest);
            return -ECONNREFUSED;
        }
        LOG_INFO("%s: SWAP (a pre-built tunnel takes fd %d's place)", dest, fd);
        if (swap_in(fd, passed, domain, flags, dest) < 0)
            return -ECONNREFUSED;
        socksify_peer_note(fd, addr, len);
        return 0;
    case SOCKSIFY_VERDICT_FAIL:
        err = socksify_wire_errno(rep.code);
        LOG_INFO("%s: FAIL code %u (%s)", dest, rep.code, socksify_strerror(err));
        return err != 0 ? -err : -ECONNREFUSED;
    case SOCKSIFY_VERDICT_RELAY:
        LOG_INFO("%s: RELAY via port %u/%u", dest, rep.relay_port4, rep.relay_port6);
        socksify_relay_ports_note(rep.relay_port4, rep.relay_port6);  /* for getpeername */
        return connect_relay(fd, domain, &rep, dest) < 0 ? -ECONNREFUSED : 0;
    default:
        LOG_WARN("%s: unknown verdict %u; refusing the connection", dest, rep.verdict);
        return -ECONNREFUSED;
    }
}

SOCKSIFY_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    int saved_errno = errno, r;

    socksify_init();
    r = socksify_connect_checked(fd, addr, len);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    errno = saved_errno;
    return 0;
}
