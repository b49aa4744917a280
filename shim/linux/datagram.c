/* The checks the send hooks share (see datagram.h). */
#include <errno.h>
#include <sys/socket.h>

#include "addr.h"
#include "cache.h"
#include "control.h"
#include "datagram.h"
#include "init.h"
#include "log.h"
#include "socksify_wire.h"

int socksify_dgram_check(int fd, const struct sockaddr *dest, socklen_t len)
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
    r = socksify_control_exchange(socksify_real_connect, &req, &rep);
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

int socksify_send_check(int fd, const struct sockaddr *dest, socklen_t len, int flags)
{
    socklen_t optlen;
    int type, r;

    if (dest == NULL || socksify_addr_family(dest, len) == 0)
        return SOCKSIFY_SEND_PASS;
    optlen = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) < 0)
        return SOCKSIFY_SEND_PASS;  /* EBADF/ENOTSOCK: the real call reports it */
    if (type == SOCK_STREAM)
        return flags & MSG_FASTOPEN ? SOCKSIFY_SEND_FASTOPEN : SOCKSIFY_SEND_PASS;
    if (type != SOCK_DGRAM)
        return SOCKSIFY_SEND_PASS;
    r = socksify_dgram_check(fd, dest, len);
    return r < 0 ? r : SOCKSIFY_SEND_PASS;
}
