/* The checks the send hooks share (see datagram.h). */
#include <errno.h>
#include <sys/socket.h>

#include "addr.h"
#include "cache.h"
#include "config.h"
#include "control.h"
#include "datagram.h"
#include "log.h"
#include "real.h"
#include "socksify_wire.h"

int socksify_dgram_decide(int fd, const struct sockaddr *dest, socklen_t len,
                          struct socksify_carry *carry)
{
    struct socksify_connect_req req;
    struct socksify_reply rep;
    char where[SOCKSIFY_ADDR_TEXT_SIZE];
    int r, err;

    if (socksify_addr_family(dest, len) == 0 || socksify_addr_is_loopback(dest, len))
        return 0;
    r = socksify_addr_fill_request(dest, len, SOCKSIFY_SOCKTYPE_DGRAM,
                                   socksify_config()->session, &req);
    if (r < 0)
        return -ECONNREFUSED;
    if (socksify_cache_direct(&req))
        return 0;
    if (carry != NULL && socksify_cache_carry(&req, &carry->rep)) {
        carry->req = req;
        return SOCKSIFY_DGRAM_CARRY;
    }
    socksify_addr_format(&req, where, sizeof where);
    r = socksify_control_exchange(&req, &rep);
    if (r < 0) {
        LOG_WARN("fd %d: UDP to %s: no verdict from the socksify daemon (%s); refusing it",
                 fd, where, socksify_strerror(-r));
        return r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;  /* never direct */
    }
    switch (rep.verdict) {
    case SOCKSIFY_VERDICT_DIRECT:
        LOG_DEBUG("fd %d: UDP to %s: DIRECT", fd, where);
        socksify_cache_note(&req, &rep);
        return 0;
    case SOCKSIFY_VERDICT_CARRY:
        if (carry == NULL || (rep.relay_port4 == 0 && rep.relay_port6 == 0)) {
            LOG_WARN("fd %d: UDP to %s: CARRY cannot be followed here; refusing it", fd,
                     where);
            return -ECONNREFUSED;
        }
        LOG_DEBUG("fd %d: UDP to %s: CARRY via port %u/%u", fd, where, rep.relay_port4,
                  rep.relay_port6);
        socksify_cache_note(&req, &rep);
        carry->req = req;
        carry->rep = rep;
        return SOCKSIFY_DGRAM_CARRY;
    case SOCKSIFY_VERDICT_FAIL:
        err = socksify_wire_errno(rep.code);
        LOG_INFO("fd %d: UDP to %s: FAIL code %u (%s)", fd, where, rep.code,
                 socksify_strerror(err));
        return err != 0 ? -err : -ECONNREFUSED;
    default:
        LOG_WARN("fd %d: UDP to %s: verdict %u is not one for datagrams; refusing it", fd,
                 where, rep.verdict);
        return -ECONNREFUSED;
    }
}

int socksify_fd_kind(int fd, int *domain)
{
    socklen_t optlen = sizeof *domain;
    int type, protocol;

    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, &optlen) < 0)
        return -errno;
    if (*domain != AF_INET && *domain != AF_INET6)
        return SOCKSIFY_KIND_NOT_IP;
    optlen = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0)
        return -errno;
    optlen = sizeof protocol;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen) < 0)
        return -errno;
    return socksify_sock_kind(*domain, type, protocol);
}

int socksify_refuse_kind(int fd, const struct sockaddr *dest, unsigned len)
{
    struct socksify_connect_req req;
    char where[SOCKSIFY_ADDR_TEXT_SIZE];
    int type = -1, protocol = -1;
    socklen_t optlen = sizeof type;

    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen);
    optlen = sizeof protocol;
    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &optlen);
    if (socksify_addr_fill_request(dest, len, 0, socksify_config()->session, &req) != 0) {
        LOG_WARN("fd %d: refusing an address the shim cannot read as the kernel will "
                 "(socket type %d, protocol %d)", fd, type, protocol);
        return -EACCES;
    }
    socksify_addr_format(&req, where, sizeof where);
    LOG_WARN("fd %d: refusing to reach %s from a socket of type %d, protocol %d: only "
             "TCP and UDP go through the socksify daemon", fd, where, type, protocol);
    return -EACCES;
}

int socksify_send_check(int fd, const struct sockaddr *dest, socklen_t len, int flags,
                        struct socksify_carry *carry)
{
    struct sockaddr_storage to;
    unsigned tolen;
    int kind, domain, where, r;

    if (dest == NULL || len == 0)
        return SOCKSIFY_SEND_PASS;
    /* An AF_INET/AF_INET6 loopback address stays on the host whatever the socket (or
     * the kernel refuses it): no system call for it (MSG_FASTOPEN connects: judged
     * below, for SOCKSIFY_PROXY_LOOPBACK). */
    if (!(flags & MSG_FASTOPEN) && socksify_addr_is_loopback(dest, len))
        return SOCKSIFY_SEND_PASS;
    kind = socksify_fd_kind(fd, &domain);
    if (kind < 0 || kind == SOCKSIFY_KIND_NOT_IP)
        return SOCKSIFY_SEND_PASS;  /* EBADF/ENOTSOCK: the real call reports it */
    if (kind == SOCKSIFY_KIND_STREAM) {
        /* Only MSG_FASTOPEN makes a stream socket use the address: it connects. */
        if (!(flags & MSG_FASTOPEN))
            return SOCKSIFY_SEND_PASS;
        where = socksify_addr_dest(domain, SOCKSIFY_DEST_CONNECT, dest, len, &to, &tolen);
        if (where == SOCKSIFY_DEST_ADDR)
            return SOCKSIFY_SEND_FASTOPEN;
        if (where == SOCKSIFY_DEST_NONE)
            return -EOPNOTSUPP;  /* AF_UNSPEC: tcp_sendmsg_fastopen()'s own answer */
        return socksify_refuse_kind(fd, NULL, 0);
    }
    where = socksify_addr_dest(domain, SOCKSIFY_DEST_SEND, dest, len, &to, &tolen);
    if (where == SOCKSIFY_DEST_NONE)
        return SOCKSIFY_SEND_PASS;  /* the connected peer, judged at connect() */
    if (where == SOCKSIFY_DEST_ADDR
        && socksify_addr_is_loopback((const struct sockaddr *)&to, tolen))
        return SOCKSIFY_SEND_PASS;
    if (where != SOCKSIFY_DEST_ADDR || kind != SOCKSIFY_KIND_DGRAM)
        return socksify_refuse_kind(fd, (const struct sockaddr *)&to,
                                    where == SOCKSIFY_DEST_ADDR ? tolen : 0);
    r = socksify_dgram_decide(fd, (const struct sockaddr *)&to, tolen, carry);
    if (r == SOCKSIFY_DGRAM_CARRY) {
        carry->domain = domain;
        return SOCKSIFY_SEND_CARRY;
    }
    return r < 0 ? r : SOCKSIFY_SEND_PASS;
}
