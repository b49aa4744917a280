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
        if (r == 0 && ov == NULL && got != NULL && nbufs > 0
            && socksify_carry_after(s, bufs[0].buf, *got < bufs[0].len ? *got
                                                                      : bufs[0].len))
            continue;
        return r;
    }
}
