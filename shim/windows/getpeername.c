/* getpeername: a relayed socket's real peer is the daemon's relay listener on
 * loopback, but the program asked for another address, and getpeername() must report
 * that one (as shim/linux/getpeername.c). For a stream socket whose real peer is a
 * loopback address, the daemon is asked (PEERNAME, docs/wire.md) with the socket's
 * local address, which is the remote end of the relay connection as the daemon sees
 * it. A read-only query that fails open: for a socket the daemon does not know (FAIL),
 * or when it cannot be asked, the real peer stands. A datagram socket connected for a
 * carried peer (carry.c) reports that peer without asking. */
#include <string.h>

#include "addr.h"
#include "shim.h"

int (WSAAPI *real_getpeername)(SOCKET, struct sockaddr *, int *);

/* The port of an AF_INET/AF_INET6 address (host order). */
static uint16_t addr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Write the daemon's answer into the caller's buffer in the socket's family and its
 * size into *len. -WSAEAFNOSUPPORT if the socket's family cannot express the answer
 * (an IPv6 destination on an AF_INET socket), -WSAEFAULT if the buffer is too small
 * (Winsock does not truncate). */
static int write_peer(int domain, const struct socksify_peer *peer, struct sockaddr *addr,
                      int in_len, int *len)
{
    struct sockaddr_storage ss;
    socklen_t full;

    if (socksify_addr_of_peer(domain, peer, &ss, &full) < 0)
        return -WSAEAFNOSUPPORT;
    if (in_len < full)
        return -WSAEFAULT;
    memcpy(addr, &ss, (size_t)full);
    *len = full;
    return 0;
}

/* The hook's logic: 0, or a negative WSA error (the real call's own). On 0 the
 * caller's buffer holds the real peer unless the daemon named the socket's original
 * destination. */
static int socksify_getpeername(SOCKET s, struct sockaddr *addr, int *len)
{
    struct sockaddr_storage kernel, local;
    struct socksify_connect_req req;
    struct socksify_peer peer;
    struct socksify_reply rep;
    uint8_t request[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE];
    uint16_t port, port4, port6;
    int in_len, kernel_len, local_len = sizeof local;
    int type = 0, optlen = sizeof type, family, r;
    struct socksify_grant g;

    if (real_getpeername(s, addr, len) == SOCKET_ERROR)
        return -WSAGetLastError();
    if (socksify_carry_peer(s, &g)) {  /* a datagram socket connected for a carried peer */
        memset(&peer, 0, sizeof peer);
        peer.family = g.dest.family;
        peer.port = g.dest.port;
        memcpy(peer.addr, g.dest.addr, sizeof peer.addr);
        family = socksify_addr_family(addr, (unsigned)*len);
        return write_peer(family, &peer, addr, *len, len);
    }
    /* The real call succeeded: *len is the real peer's size, which fits the caller's
     * buffer (Winsock fails rather than truncate), and the answer below has the same
     * family, hence the same size. */
    in_len = *len;
    if (in_len <= 0 || in_len > (int)sizeof kernel)
        return 0;
    memcpy(&kernel, addr, (size_t)in_len);
    kernel_len = in_len;
    family = socksify_addr_family((const struct sockaddr *)&kernel, (unsigned)kernel_len);
    if (family == 0 || !socksify_addr_is_loopback((const struct sockaddr *)&kernel,
                                                  (unsigned)kernel_len))
        return 0;  /* not IPv4/IPv6, or connected to another host: not relayed */
    port = addr_port(&kernel);
    socksify_relay_ports(&port4, &port6);
    if ((port4 != 0 || port6 != 0) && port != port4 && port != port6)
        return 0;  /* a local service, not the daemon's relay */
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen) != 0
        || type != SOCK_STREAM)
        return 0;
    if (getsockname(s, (struct sockaddr *)&local, &local_len) != 0)
        return 0;
    /* The local end as the daemon sees it: a v4-mapped address becomes family 4. */
    if (socksify_addr_fill_request((const struct sockaddr *)&local, (unsigned)local_len,
                                   SOCKSIFY_SOCKTYPE_STREAM, socksify_cfg.session,
                                   &req) < 0
        || socksify_wire_encode_request(SOCKSIFY_OP_PEERNAME, &req, request,
                                        sizeof request) < 0)
        return 0;
    r = socksify_control_send(request, sizeof request, reply, sizeof reply);
    if (r < 0) {
        LOG_DEBUG("socket %llu: no PEERNAME answer (error %d); reporting the real peer",
                  (unsigned long long)s, -r);
        return 0;
    }
    if (socksify_wire_decode_peer(reply, sizeof reply, &peer) < 0) {
        if (socksify_wire_decode_reply(reply, sizeof reply, &rep) == 0
            && rep.verdict == SOCKSIFY_VERDICT_FAIL)
            LOG_DEBUG("socket %llu: not a relayed socket (FAIL code %u)",
                      (unsigned long long)s, rep.code);
        else
            LOG_WARN("socket %llu: unexpected answer to PEERNAME (verdict %u); reporting "
                     "the real peer", (unsigned long long)s,
                     reply[SOCKSIFY_REP_OFF_VERDICT]);
        return 0;
    }
    r = write_peer(family, &peer, addr, in_len, len);
    if (r == -WSAEAFNOSUPPORT) {
        LOG_DEBUG("socket %llu: an IPv6 destination cannot be reported on an IPv4 "
                  "socket", (unsigned long long)s);
        return 0;
    }
    if (r < 0)
        return r;
    LOG_DEBUG("socket %llu: relayed socket, reporting its original destination",
              (unsigned long long)s);
    return 0;
}

int WSAAPI socksify_hook_getpeername(SOCKET s, struct sockaddr *addr, int *len)
{
    int saved = WSAGetLastError(), r = socksify_getpeername(s, addr, len);

    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    WSASetLastError(saved);
    return 0;
}
