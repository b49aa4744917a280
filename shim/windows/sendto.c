/* sendto: a datagram to a destination outside the host goes out only if the daemon
 * says DIRECT (datagram.c); else SOCKET_ERROR with the refusal's error (WSAEACCES
 * under a chain or block rule, WSAECONNREFUSED/WSAETIMEDOUT without a daemon), and
 * nothing is sent. */
#include "shim.h"

int (WSAAPI *real_sendto)(SOCKET, const char *, int, int, const struct sockaddr *, int);

int WSAAPI socksify_hook_sendto(SOCKET s, const char *buf, int len, int flags,
                                const struct sockaddr *to, int tolen)
{
    int r = socksify_datagram_check(s, to, tolen);

    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    return real_sendto(s, buf, len, flags, to, tolen);
}
