/* sendto: a datagram to a destination outside the host goes out as the daemon says
 * (datagram.c): DIRECT as asked; CARRY enveloped to the daemon's carrier (carry.c),
 * the return value the payload's bytes; else SOCKET_ERROR with the refusal's error
 * (WSAEACCES under a chain or block rule, WSAECONNREFUSED/WSAETIMEDOUT without a
 * daemon), and nothing is sent. */
#include "shim.h"

int (WSAAPI *real_sendto)(SOCKET, const char *, int, int, const struct sockaddr *, int);

int WSAAPI socksify_hook_sendto(SOCKET s, const char *buf, int len, int flags,
                                const struct sockaddr *to, int tolen)
{
    struct socksify_grant g;
    WSABUF b;
    DWORD sent = 0;
    int r = socksify_datagram_route(s, to, tolen, &g);

    if (r == SOCKSIFY_DGRAM_SEND)
        return real_sendto(s, buf, len, flags, to, tolen);
    if (r == SOCKSIFY_DGRAM_CARRY) {
        b.buf = (char *)buf;
        b.len = len < 0 ? 0 : (ULONG)len;
        r = len < 0 ? -WSAEINVAL : socksify_carry_send(s, &g, &b, 1, (DWORD)flags, &sent);
        if (r == 0)
            return (int)sent;
    }
    WSASetLastError(-r);
    return SOCKET_ERROR;
}
