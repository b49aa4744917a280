/* WSARecvFrom: as recvfrom (recvfrom.c). An overlapped WSARecvFrom on a carried socket
 * is refused with WSAEOPNOTSUPP; one on another datagram socket keeps it from being
 * carried (carry.c). */
#include "shim.h"

int (WSAAPI *real_WSARecvFrom)(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                               struct sockaddr *, LPINT, LPWSAOVERLAPPED,
                               LPWSAOVERLAPPED_COMPLETION_ROUTINE);

int WSAAPI socksify_hook_WSARecvFrom(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD got,
                                     LPDWORD flags, struct sockaddr *from, LPINT fromlen,
                                     LPWSAOVERLAPPED ov,
                                     LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    for (;;) {
        DWORD n = 0;
        int r = socksify_carry_recv(s, bufs, nbufs, &n, flags, from, fromlen, ov,
                                    socksify_recv_plain, &s);

        if (r == 0 || (r == SOCKET_ERROR && WSAGetLastError() == WSAEMSGSIZE)) {
            if (got != NULL)
                *got = n;
            return r;
        }
        if (r == SOCKET_ERROR)
            return r;
        r = real_WSARecvFrom(s, bufs, nbufs, got, flags, from, fromlen, ov, done);
        if (ov == NULL && got != NULL && nbufs > 0
            && (r == 0 || (nbufs == 1 && WSAGetLastError() == WSAEMSGSIZE))) {
            int err = r == 0 ? 0 : WSAEMSGSIZE;
            DWORD n = r == 0 ? *got : bufs[0].len;
            switch (socksify_carry_after(s, bufs[0].buf, &n, nbufs == 1 || n <= bufs[0].len,
                                         from, fromlen)) {
            case SOCKSIFY_AFTER_DROP:
                if (*flags & MSG_PEEK)
                    socksify_carry_consume(s);
                continue;
            case SOCKSIFY_AFTER_STRIPPED:
                *got = n;
                if (err != 0) {
                    WSASetLastError(err);
                    return SOCKET_ERROR;
                }
                return 0;
            }
        }
        return r;
    }
}
