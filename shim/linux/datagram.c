/* The checks the send hooks share (see datagram.h). */
#include <errno.h>
#include <sys/socket.h>

#include <string.h>

#include "addr.h"
#include "cache.h"
#include "carried.h"
#include "config.h"
#include "control.h"
#include "datagram.h"
#include "log.h"
#include "real.h"
#include "socksify_wire.h"

/* The generation bytes of a WRAP answer as a number. */
static uint64_t wrap_generation(const struct socksify_wrap *w)
{
    uint64_t g = 0;

    for (int i = 0; i < 8; i++)
        g = g << 8 | w->generation[i];
    return g;
}

/* Bind fd as the kernel's autobind on the first send would (the wildcard address of
 * its domain, port 0) if it is unbound: the daemon names its port to hop 1. */
static int bind_if_unbound(int fd, int domain)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if ((ss.ss_family == AF_INET && ((struct sockaddr_in *)&ss)->sin_port != 0)
        || (ss.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ss)->sin6_port != 0))
        return 0;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (sa_family_t)domain;
    len = domain == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    return bind(fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
}

/* The datagram handoff (docs/wire.md, "Datagram handoff: WRAP"): fd's grant for req
 * if it holds, else, once per socket and destination, a WRAP request with fd attached.
 * Returns SOCKSIFY_DGRAM_CARRY with carry->wrapped for a WRAP answer; 0 with
 * rep->verdict 0xff when nothing was asked (asked before); 0 with the answer in *rep
 * for another one; or -errno (failed closed). */
static int ask_wrap(int fd, const struct socksify_connect_req *req,
                    struct socksify_carry *carry, struct socksify_reply *rep,
                    const char *where)
{
    struct socksify_carried e;
    const struct socksify_wrapgrant *g;
    uint8_t reply[SOCKSIFY_REPLY_SIZE + SOCKSIFY_WRAP_MAX_BODY];
    uint64_t now = socksify_cache_generation();
    int domain, kind, r;

    rep->verdict = 0xff;
    if (socksify_carried_get(fd, &e) == 0) {
        g = socksify_carried_find_wrap(&e, req);
        if (g != NULL && now != 0 && wrap_generation(&g->w) == now) {
            carry->req = *req;
            carry->wrapped = 1;
            carry->wrap = g->w;
            return SOCKSIFY_DGRAM_CARRY;
        }
        if (g == NULL && socksify_carried_refused_wrap(&e, req))
            return 0;
    }
    kind = socksify_fd_kind(fd, &domain);
    if (kind != SOCKSIFY_KIND_DGRAM || bind_if_unbound(fd, domain) < 0)
        return 0;                 /* CONNECT as before */
    r = socksify_control_wrap(req, fd, reply, sizeof reply);
    if (r < 0) {
        LOG_WARN("fd %d: UDP to %s: no verdict from the socksify daemon (%s); refusing it",
                 fd, where, socksify_strerror(-r));
        return r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;  /* never direct */
    }
    if (r > SOCKSIFY_REPLY_SIZE || reply[SOCKSIFY_REP_OFF_VERDICT] == SOCKSIFY_VERDICT_WRAP) {
        if (socksify_wire_decode_wrap(reply, (size_t)r, &carry->wrap) < 0) {
            LOG_WARN("fd %d: UDP to %s: malformed WRAP reply; refusing it", fd, where);
            return -ECONNREFUSED;
        }
        LOG_DEBUG("fd %d: UDP to %s: WRAP via hop 1's relay port %u", fd, where,
                  carry->wrap.port);
        socksify_carried_wrap(fd, req, &carry->wrap);
        /* the grant behind it is a carrier grant too: cached as a CARRY answer (which
         * maps the generation file, so the grant is known to hold on the next send) */
        memset(&carry->rep, 0, sizeof carry->rep);
        carry->rep.verdict = SOCKSIFY_VERDICT_CARRY;
        carry->rep.relay_port4 = carry->wrap.carrier_port4;
        carry->rep.relay_port6 = carry->wrap.carrier_port6;
        memcpy(carry->rep.token, carry->wrap.generation, 8);
        memcpy(carry->rep.token + 8, carry->wrap.token, SOCKSIFY_CARRY_TOKEN_SIZE);
        socksify_cache_note(req, &carry->rep);
        carry->req = *req;
        carry->wrapped = 1;
        return SOCKSIFY_DGRAM_CARRY;
    }
    if (socksify_wire_decode_reply(reply, SOCKSIFY_REPLY_SIZE, rep) < 0) {
        LOG_WARN("fd %d: UDP to %s: malformed reply; refusing it", fd, where);
        return -ECONNREFUSED;
    }
    if (rep->verdict == SOCKSIFY_VERDICT_CARRY)
        socksify_carried_nowrap(fd, req);   /* CARRY from now on (cached per process) */
    return 0;
}

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
    socksify_addr_format(&req, where, sizeof where);
    if (carry != NULL) {
        carry->wrapped = 0;
        r = ask_wrap(fd, &req, carry, &rep, where);
        if (r != 0)
            return r;             /* WRAP (carry filled), or failed closed */
        if (rep.verdict != 0xff)  /* answered otherwise: rep below */
            goto verdict;
    }
    if (carry != NULL && socksify_cache_carry(&req, &carry->rep)) {
        carry->req = req;
        return SOCKSIFY_DGRAM_CARRY;
    }
    r = socksify_control_exchange(&req, &rep);
    if (r < 0) {
        LOG_WARN("fd %d: UDP to %s: no verdict from the socksify daemon (%s); refusing it",
                 fd, where, socksify_strerror(-r));
        return r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;  /* never direct */
    }
verdict:
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
