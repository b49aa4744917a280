/* The check the datagram send hooks share (sendto, WSASendTo, WSASendMsg), as
 * shim/linux/datagram.c: a datagram to an IPv4/IPv6 destination that is not loopback
 * is the daemon's to allow (CONNECT with socktype 2, docs/wire.md "Datagram sockets"),
 * asked with the same request as a UDP connect(). DIRECT lets it go; anything else
 * refuses it, and no daemon refuses it too (fail closed): never sent around the
 * daemon. */
#include "addr.h"
#include "shim.h"

int socksify_datagram_check(SOCKET s, const struct sockaddr *to, int tolen)
{
    struct socksify_reply rep;
    int type = 0, optlen = sizeof type, err = 0, saved = WSAGetLastError();

    if (to == NULL || tolen <= 0 || socksify_addr_family(to, (unsigned)tolen) == 0)
        return 0;  /* no destination (a connected socket's connect was asked), or not
                    * IPv4/IPv6: the real call judges */
    if (getsockopt(s, SOL_SOCKET, SO_TYPE, (char *)&type, &optlen) != 0) {
        WSASetLastError(saved);
        return 0;  /* not a socket: the real call reports it */
    }
    if (type != SOCK_DGRAM || socksify_addr_is_loopback(to, (unsigned)tolen))
        return 0;  /* a stream socket ignores the address; loopback stays here */
    switch (socksify_connect_ask(s, to, tolen, &rep, &err)) {
    case SOCKSIFY_GO_DIRECT:
        WSASetLastError(saved);
        return 0;
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
