/* RESOLVE and NAMEOF for the name lookup hooks (see resolve.h). Fails closed: a name
 * or an address the daemon did not allow is never looked up locally, since the query
 * itself would leak it. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>

#include "addr.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "name.h"
#include "real.h"
#include "resolve.h"

int socksify_resolve_name(const char *name, unsigned family, struct socksify_peer *peer)
{
    if (socksify_name_is_local(name)) {
        LOG_DEBUG("%s: numeric or localhost, resolving locally", name);
        return SOCKSIFY_NAME_REAL;
    }
    return socksify_resolve_ask(name, family, peer);
}

int socksify_resolve_ask(const char *name, unsigned family, struct socksify_peer *peer)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME];
    uint8_t reply[SOCKSIFY_REPLY_SIZE];
    struct socksify_reply rep;
    int len, r;

    len = socksify_wire_encode_resolve(name, family, socksify_config()->session, request,
                                       sizeof request);
    if (len < 0) {
        /* Not printed: it may hold anything, control characters included. */
        LOG_INFO("refusing the lookup of a name that is empty, longer than %d bytes or "
                 "not printable ASCII", SOCKSIFY_MAX_NAME);
        return -ENOENT;
    }
    r = socksify_control_send(request, (size_t)len, reply);
    if (r < 0) {
        LOG_WARN("%s: no answer from the socksify daemon (%s); failing the lookup",
                 name, socksify_strerror(-r));
        return -EAGAIN;  /* never a local query */
    }
    if (socksify_wire_decode_peer(reply, sizeof reply, peer) == 0) {
        LOG_INFO("%s: stand-in address from the daemon", name);
        return SOCKSIFY_NAME_PEER;
    }
    if (socksify_wire_decode_reply(reply, sizeof reply, &rep) == 0) {
        if (rep.verdict == SOCKSIFY_VERDICT_DIRECT) {
            LOG_INFO("%s: DIRECT, resolving locally", name);
            return SOCKSIFY_NAME_REAL;
        }
        if (rep.verdict == SOCKSIFY_VERDICT_FAIL && rep.code == SOCKSIFY_CODE_TIMEDOUT) {
            /* no stand-in address is free now (docs/wire.md "RESOLVE") */
            LOG_INFO("%s: the daemon has no stand-in address free; try again later", name);
            return -EAGAIN;
        }
        if (rep.verdict == SOCKSIFY_VERDICT_FAIL) {
            LOG_INFO("%s: FAIL code %u, the lookup is refused", name, rep.code);
            return -ENOENT;
        }
        LOG_WARN("%s: unexpected verdict %u for a lookup; failing it", name, rep.verdict);
        return -EAGAIN;
    }
    LOG_WARN("%s: malformed answer to RESOLVE (starts %02x%02x%02x%02x %02x %02x); failing "
             "the lookup", name, reply[0], reply[1], reply[2], reply[3],
             reply[SOCKSIFY_REP_OFF_VERSION], reply[SOCKSIFY_REP_OFF_VERDICT]);
    return -EAGAIN;
}

int socksify_resolve_addr(const struct sockaddr *sa, socklen_t salen, char *name,
                          size_t namelen)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE];
    uint8_t reply[SOCKSIFY_REPLY_SIZE + SOCKSIFY_MAX_NAME];
    char text[INET6_ADDRSTRLEN];
    struct socksify_connect_req req;
    struct socksify_reply rep;
    int len, r;

    if (socksify_addr_family(sa, salen) == 0 || socksify_addr_is_loopback(sa, salen))
        return SOCKSIFY_NAME_REAL;  /* not an IP address, or one on this host */
    /* An IPv4-mapped address becomes family 4; NAMEOF has port 0, socktype stream. */
    if (socksify_addr_fill_request(sa, salen, SOCKSIFY_SOCKTYPE_STREAM,
                                   socksify_config()->session, &req) < 0)
        return SOCKSIFY_NAME_REAL;
    req.port = 0;
    if (inet_ntop(req.family == SOCKSIFY_FAMILY_INET ? AF_INET : AF_INET6, req.addr, text,
                  sizeof text) == NULL)
        text[0] = '\0';  /* for log lines only */
    if ((len = socksify_wire_encode_request(SOCKSIFY_OP_NAMEOF, &req, request,
                                            sizeof request)) < 0) {
        LOG_WARN("%s: cannot encode the reverse lookup: %s", text, socksify_strerror(-len));
        return -EAGAIN;
    }
    r = socksify_control_send_reply(request, (size_t)len, reply,
                                    sizeof reply);
    if (r < 0) {
        LOG_WARN("%s: no answer from the socksify daemon (%s); failing the reverse "
                 "lookup", text, socksify_strerror(-r));
        return -EAGAIN;  /* never a local query */
    }
    if ((len = socksify_wire_decode_name(reply, (size_t)r, name, namelen)) > 0) {
        LOG_INFO("%s: named by the daemon", text);
        return len;
    }
    if (r == SOCKSIFY_REPLY_SIZE && socksify_wire_decode_reply(reply, (size_t)r, &rep) == 0) {
        if (rep.verdict == SOCKSIFY_VERDICT_DIRECT) {
            LOG_INFO("%s: DIRECT, reverse-resolving locally", text);
            return SOCKSIFY_NAME_REAL;
        }
        if (rep.verdict == SOCKSIFY_VERDICT_FAIL) {
            LOG_INFO("%s: FAIL code %u, no reverse lookup", text, rep.code);
            return -ENOENT;
        }
        LOG_WARN("%s: unexpected verdict %u for a reverse lookup; failing it", text,
                 rep.verdict);
        return -EAGAIN;
    }
    LOG_WARN("%s: malformed answer to NAMEOF (starts %02x%02x%02x%02x %02x %02x, %d bytes); "
             "failing the reverse lookup", text, reply[0], reply[1], reply[2], reply[3],
             reply[SOCKSIFY_REP_OFF_VERSION], reply[SOCKSIFY_REP_OFF_VERDICT], r);
    return -EAGAIN;
}
