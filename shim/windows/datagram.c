/* The decision the datagram send hooks share (sendto, WSASendTo, WSASendMsg, send and
 * WSASend on a connected socket), as shim/linux/datagram.c: a datagram to an
 * IPv4/IPv6 destination that is not loopback is the daemon's to allow (CONNECT with
 * socktype 2, docs/wire.md "Datagram sockets"), asked with the same request as a UDP
 * connect(). DIRECT lets it go; CARRY sends it enveloped to the daemon's carrier
 * (carry.c, docs/wire.md "Carried datagrams"); anything else refuses it, and no daemon
 * refuses it too (fail closed): never sent around the daemon. A socket connected for a
 * carried peer sends every datagram to that peer through the carrier. */
#include <string.h>

#include "addr.h"
#include "shim.h"

int socksify_datagram_route(SOCKET s, const struct sockaddr *to, int tolen,
                            struct socksify_grant *g)
{
    struct socksify_connect_req req;
    struct socksify_reply rep;
    int type = 0, optlen = sizeof type, err = 0, saved = WSAGetLastError(), r;

    if ((r = socksify_carry_peer_fresh(s, g)) < 0)
        return r;
    if (r == 1) {
        /* connected to the carrier for a carried peer: Winsock ignores the address of
         * a send on a connected datagram socket; one that names another destination is
         * refused rather than sent to the peer */
        if (to == NULL || tolen <= 0)
            return SOCKSIFY_DGRAM_CARRY;
        if (socksify_addr_fill_request(to, (unsigned)tolen, SOCKSIFY_SOCKTYPE_DGRAM,
                                       socksify_cfg.session, &req) == 0
            && req.family == g->dest.family && req.port == g->dest.port
            && memcmp(req.addr, g->dest.addr, sizeof req.addr) == 0)
            return SOCKSIFY_DGRAM_CARRY;
        return -WSAEISCONN;
    }
    if (to == NULL || tolen <= 0 || socksify_addr_family(to, (unsigned)tolen) == 0)
        return SOCKSIFY_DGRAM_SEND;  /* no destination (a connected socket's connect was
                                      * asked), or not IPv4/IPv6: the real call judges */
    if (!socksify_addr_is_loopback(to, (unsigned)tolen)
        && socksify_addr_fill_request(to, (unsigned)tolen, SOCKSIFY_SOCKTYPE_DGRAM,
                                      socksify_cfg.session, &req) == 0
        && socksify_carry_cached(s, &req, g, 1))
        return SOCKSIFY_DGRAM_CARRY;  /* this socket's grant: no call into Winsock */
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen) != 0) {
        WSASetLastError(saved);
        return SOCKSIFY_DGRAM_SEND;  /* not a socket: the real call reports it */
    }
    if (type != SOCK_DGRAM || socksify_addr_is_loopback(to, (unsigned)tolen))
        return SOCKSIFY_DGRAM_SEND;  /* a stream socket ignores the address; loopback
                                      * stays here */
    if (socksify_addr_fill_request(to, (unsigned)tolen, SOCKSIFY_SOCKTYPE_DGRAM,
                                   socksify_cfg.session, &req) == 0
        && socksify_carry_cached(s, &req, g, 0)) {
        WSASetLastError(saved);
        return SOCKSIFY_DGRAM_CARRY;
    }
    switch (socksify_connect_ask_req(s, to, tolen, &rep, &err, &req)) {
    case SOCKSIFY_GO_DIRECT:
        WSASetLastError(saved);
        return SOCKSIFY_DGRAM_SEND;
    case SOCKSIFY_GO_CARRY:
        r = socksify_carry_grant(s, &req, &rep, g);
        WSASetLastError(saved);
        return r < 0 ? r : SOCKSIFY_DGRAM_CARRY;
    case SOCKSIFY_GO_RELAY:  /* never answered for datagrams (connect_ask refuses it) */
    case SOCKSIFY_GO_FAIL:
        break;
    }
    if (err == 0)
        err = WSAECONNREFUSED;
    LOG_INFO("socket %llu: datagram refused (error %d); nothing sent",
             (unsigned long long)s, err);
    return -err;
}
