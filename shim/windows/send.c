/* send: on a datagram socket connected for a carried peer (connect.c, carry.c) the
 * datagram goes enveloped to the daemon's carrier; anything else is the real send. */
#include "shim.h"

int (WSAAPI *real_send)(SOCKET, const char *, int, int);

int WSAAPI socksify_hook_send(SOCKET s, const char *buf, int len, int flags)
{
    struct socksify_grant g;
    WSABUF b;
    DWORD sent = 0;
    int r;

    if ((r = socksify_carry_peer_fresh(s, &g)) == 0)
        return real_send(s, buf, len, flags);
    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    b.buf = (char *)buf;
    b.len = len < 0 ? 0 : (ULONG)len;
    r = len < 0 ? -WSAEINVAL : socksify_carry_send(s, &g, &b, 1, (DWORD)flags, &sent);
    if (r == 0)
        return (int)sent;
    WSASetLastError(-r);
    return SOCKET_ERROR;
}
