/* connect(): ask the daemon about every IPv4/IPv6 stream connection that leaves the
 * host, then go direct, fail, or connect the program's own socket to the daemon's relay
 * and send the token, as the verdict says (docs/wire.md). Datagram sockets are asked
 * too (socktype 2): DIRECT lets them connect; CARRY connects them to the daemon's
 * carrier and remembers the peer (carry.c); anything else refuses. Fails closed: never a direct
 * connection the daemon did not allow. The logic here is shared by WSAConnect,
 * WSAConnectByName and ConnectEx. */
#include <string.h>

#include "addr.h"
#include "shim.h"

#define RELAY_TIMEOUT_MS 10000

int socksify_connect_needs_daemon(SOCKET s, const struct sockaddr *addr, int len)
{
    WSAPROTOCOL_INFOW info;
    struct sockaddr_storage peer;
    int type = 0, optlen = sizeof type, peer_len = sizeof peer;
    int family = socksify_addr_family(addr, len < 0 ? 0 : (unsigned)len);
    int saved = WSAGetLastError();

    if (family == 0)
        return 0;  /* not IPv4/IPv6, or malformed: the real call judges */
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen) != 0) {
        WSASetLastError(saved);
        return 0;  /* not a socket */
    }
    if (type != SOCK_STREAM && type != SOCK_DGRAM)
        return 0;
    optlen = sizeof info;
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &optlen) == 0
        && type == SOCK_STREAM && info.iAddressFamily != family) {
        WSASetLastError(saved);
        return 0;  /* the real call rejects the mismatch */
    }
    if (socksify_addr_is_loopback(addr, (unsigned)len) && !socksify_cfg.proxy_loopback)
        return 0;
    if (type == SOCK_STREAM && getpeername(s, (struct sockaddr *)&peer, &peer_len) == 0)
        return 0;  /* already connected: WSAEISCONN from the real call */
    WSASetLastError(saved);
    return 1;
}

enum socksify_verdict socksify_connect_ask(SOCKET s, const struct sockaddr *addr, int len,
                                          struct socksify_reply *rep, int *err)
{
    struct socksify_connect_req req;

    return socksify_connect_ask_req(s, addr, len, rep, err, &req);
}

enum socksify_verdict socksify_connect_ask_req(SOCKET s, const struct sockaddr *addr,
                                              int len, struct socksify_reply *rep,
                                              int *err, struct socksify_connect_req *out)
{
    struct socksify_connect_req req;
    uint8_t request[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE];
    char dest[SOCKSIFY_ADDR_TEXT_SIZE];
    int type = SOCK_STREAM, optlen = sizeof type, r;

    getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen);
    if (socksify_addr_fill_request(addr, (unsigned)len,
                                   type == SOCK_DGRAM ? SOCKSIFY_SOCKTYPE_DGRAM
                                                      : SOCKSIFY_SOCKTYPE_STREAM,
                                   socksify_cfg.session, &req) < 0
        || socksify_wire_encode_connect(&req, request, sizeof request) < 0) {
        *err = WSAECONNREFUSED;
        return SOCKSIFY_GO_FAIL;
    }
    *out = req;
    if (socksify_cache_direct(&req)) {
        if (socksify_cfg.log_level >= SOCKSIFY_LOG_DEBUG) {
            socksify_addr_format(&req, dest, sizeof dest);
            LOG_DEBUG("%s: DIRECT (cached)", dest);
        }
        memset(rep, 0, sizeof *rep);
        rep->verdict = SOCKSIFY_VERDICT_DIRECT;
        return SOCKSIFY_GO_DIRECT;
    }
    socksify_addr_format(&req, dest, sizeof dest);
    r = socksify_control_send(request, sizeof request, reply, sizeof reply);
    if (r < 0) {
        LOG_WARN("%s: no verdict from the socksify daemon (error %d); refusing the "
                 "connection", dest, -r);
        *err = r == -WSAETIMEDOUT ? WSAETIMEDOUT : WSAECONNREFUSED;  /* never direct */
        return SOCKSIFY_GO_FAIL;
    }
    if (socksify_wire_decode_reply(reply, sizeof reply, rep) < 0) {
        LOG_WARN("%s: malformed reply from the daemon; refusing the connection", dest);
        *err = WSAECONNREFUSED;
        return SOCKSIFY_GO_FAIL;
    }
    switch (rep->verdict) {
    case SOCKSIFY_VERDICT_DIRECT:
        LOG_INFO("%s: DIRECT", dest);
        socksify_cache_note(&req, rep);
        return SOCKSIFY_GO_DIRECT;
    case SOCKSIFY_VERDICT_RELAY:
        if (type != SOCK_STREAM)
            break;
        LOG_INFO("%s: RELAY via port %u", dest, rep->relay_port4);
        return SOCKSIFY_GO_RELAY;
    case SOCKSIFY_VERDICT_CARRY:
        if (type != SOCK_DGRAM)
            break;
        LOG_INFO("%s: CARRY via port %u", dest, rep->relay_port4);
        return SOCKSIFY_GO_CARRY;
    case SOCKSIFY_VERDICT_FAIL:
        *err = socksify_code_to_wsa(rep->code);
        LOG_INFO("%s: FAIL code %u (error %d)", dest, rep->code, *err);
        return SOCKSIFY_GO_FAIL;
    }
    LOG_WARN("%s: unexpected verdict %u; refusing the connection", dest, rep->verdict);
    *err = WSAECONNREFUSED;
    return SOCKSIFY_GO_FAIL;
}

/* Wait for a non-blocking connect or send on s to be able to go on. */
static int wait_writable(SOCKET s, ULONGLONG deadline)
{
    for (;;) {
        fd_set wr, ex;
        struct timeval tv;
        ULONGLONG now = GetTickCount64();
        int r, err = 0, len = sizeof err;

        if (now >= deadline)
            return WSAETIMEDOUT;
        tv.tv_sec = (long)((deadline - now) / 1000);
        tv.tv_usec = (long)((deadline - now) % 1000 * 1000);
        FD_ZERO(&wr);
        FD_ZERO(&ex);
        FD_SET(s, &wr);
        FD_SET(s, &ex);
        r = select(0, NULL, &wr, &ex, &tv);
        if (r == SOCKET_ERROR)
            return WSAGetLastError();
        if (r == 0)
            continue;
        if (FD_ISSET(s, &ex)) {
            getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&err, &len);
            return err != 0 ? err : WSAECONNREFUSED;
        }
        return 0;
    }
}

int socksify_connect_attach(SOCKET s, const struct sockaddr *addr,
                            const struct socksify_reply *rep)
{
    struct sockaddr_storage relay;
    socklen_t relay_len;
    ULONGLONG deadline = GetTickCount64() + RELAY_TIMEOUT_MS;
    const uint8_t *token = rep->token;
    size_t left = sizeof rep->token;
    int r;

    if (socksify_addr_relay(addr->sa_family, rep, &relay, &relay_len) < 0) {
        LOG_WARN("RELAY reply without a relay port for this socket");
        return WSAECONNREFUSED;
    }
    socksify_relay_ports_note(rep->relay_port4, rep->relay_port6);  /* for getpeername */
    if (real_connect(s, (const struct sockaddr *)&relay, relay_len) == SOCKET_ERROR) {
        r = WSAGetLastError();
        /* A non-blocking socket (FIONBIO, WSAEventSelect): wait for the loopback
         * connect. Its FD_CONNECT event reaches the program as for any connect. */
        if (r == WSAEWOULDBLOCK)
            r = wait_writable(s, deadline);
        if (r != 0) {
            LOG_WARN("cannot connect to the socksify relay: error %d", r);
            return WSAECONNREFUSED;
        }
    }
    while (left > 0) {
        int n = send(s, (const char *)token, (int)left, 0);
        if (n > 0) {
            token += n;
            left -= (size_t)n;
            continue;
        }
        r = WSAGetLastError();
        if (r == WSAEWOULDBLOCK && (r = wait_writable(s, deadline)) == 0)
            continue;
        LOG_WARN("cannot send the token to the socksify relay: error %d", r);
        return WSAECONNREFUSED;
    }
    return 0;
}

int socksify_connect_run(SOCKET s, const struct sockaddr *addr, int len,
                         int (*direct)(void *ctx), void *ctx)
{
    struct socksify_connect_req req;
    struct socksify_reply rep;
    struct socksify_grant g;
    int err = 0, saved = WSAGetLastError();

    socksify_carry_unconnect(s);  /* a datagram socket connected anew, or disconnected */
    if (!socksify_connect_needs_daemon(s, addr, len))
        return direct(ctx);
    switch (socksify_connect_ask_req(s, addr, len, &rep, &err, &req)) {
    case SOCKSIFY_GO_DIRECT:
        return direct(ctx);
    case SOCKSIFY_GO_RELAY:
        err = socksify_connect_attach(s, addr, &rep);
        break;
    case SOCKSIFY_GO_CARRY:
        err = socksify_carry_grant(s, &req, &rep, &g);
        err = err < 0 ? -err : socksify_carry_connect(s, &g);
        break;
    case SOCKSIFY_GO_FAIL:
        break;
    }
    if (err != 0) {
        WSASetLastError(err);
        return SOCKET_ERROR;
    }
    WSASetLastError(saved);
    return 0;
}

struct connect_args {
    SOCKET s;
    const struct sockaddr *addr;
    int len;
};

static int connect_direct(void *ctx)
{
    struct connect_args *a = ctx;

    return real_connect(a->s, a->addr, a->len);
}

int WSAAPI socksify_hook_connect(SOCKET s, const struct sockaddr *addr, int len)
{
    struct connect_args a = {s, addr, len};

    return socksify_connect_run(s, addr, len, connect_direct, &a);
}
