/* WSASend: as send (send.c). An overlapped WSASend on a socket connected for a carried
 * peer is refused with WSAEOPNOTSUPP (no completion posted, nothing sent). */
#include "shim.h"

int (WSAAPI *real_WSASend)(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD, LPWSAOVERLAPPED,
                           LPWSAOVERLAPPED_COMPLETION_ROUTINE);

int WSAAPI socksify_hook_WSASend(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD sent,
                                 DWORD flags, LPWSAOVERLAPPED ov,
                                 LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_grant g;
    int r;

    if ((r = socksify_carry_peer_fresh(s, &g)) == 0)
        return real_WSASend(s, bufs, nbufs, sent, flags, ov, done);
    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    r = ov != NULL ? -WSAEOPNOTSUPP : socksify_carry_send(s, &g, bufs, nbufs, flags, sent);
    if (r == 0)
        return 0;
    if (r == -WSAEOPNOTSUPP)
        LOG_INFO("socket %llu: overlapped sends of carried datagrams are not supported",
                 (unsigned long long)s);
    WSASetLastError(-r);
    return SOCKET_ERROR;
}
