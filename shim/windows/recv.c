/* recv: on a carried datagram socket (carry.c) the envelope is stripped; a datagram
 * from the carrier without a valid envelope is never handed over. */
#include "shim.h"

int (WSAAPI *real_recv)(SOCKET, char *, int, int);

int WSAAPI socksify_hook_recv(SOCKET s, char *buf, int len, int flags)
{
    for (;;) {
        WSABUF b;
        DWORD got = 0, fl = (DWORD)flags;
        int r;

        b.buf = buf;
        b.len = len < 0 ? 0 : (ULONG)len;
        r = socksify_carry_recv(s, &b, 1, &got, &fl, NULL, NULL, NULL,
                                socksify_recv_plain, &s);
        if (r == 0)
            return (int)got;
        if (r == SOCKET_ERROR)
            return SOCKET_ERROR;
        r = real_recv(s, buf, len, flags);
        if (r >= 0 || WSAGetLastError() == WSAEMSGSIZE) {
            int err = r >= 0 ? 0 : WSAEMSGSIZE;
            DWORD n = r >= 0 ? (DWORD)r : b.len;
            switch (socksify_carry_after(s, buf, &n, 1, NULL, NULL)) {
            case SOCKSIFY_AFTER_DROP:
                if (flags & MSG_PEEK)
                    socksify_carry_consume(s);
                continue;
            case SOCKSIFY_AFTER_STRIPPED:
                if (err != 0) {
                    WSASetLastError(err);
                    return SOCKET_ERROR;
                }
                return (int)n;
            }
        }
        return r;
    }
}
