/* WSASendTo: as sendto (datagram.c decides). A refusal fails at once, overlapped or
 * not: SOCKET_ERROR with the error, no completion posted, the event and the
 * completion routine untouched, nothing sent. The daemon is asked on the calling
 * thread, before the real call. A carried datagram goes enveloped to the daemon's
 * carrier (carry.c); an overlapped one is refused with WSAEOPNOTSUPP. */
#include "shim.h"

int (WSAAPI *real_WSASendTo)(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD,
                             const struct sockaddr *, int, LPWSAOVERLAPPED,
                             LPWSAOVERLAPPED_COMPLETION_ROUTINE);

int WSAAPI socksify_hook_WSASendTo(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD sent,
                                   DWORD flags, const struct sockaddr *to, int tolen,
                                   LPWSAOVERLAPPED ov,
                                   LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_grant g;
    int r = socksify_datagram_route(s, to, tolen, &g);

    if (r == SOCKSIFY_DGRAM_SEND)
        return real_WSASendTo(s, bufs, nbufs, sent, flags, to, tolen, ov, done);
    if (r == SOCKSIFY_DGRAM_CARRY) {
        if (ov != NULL) {
            LOG_INFO("socket %llu: overlapped sends of carried datagrams are not "
                     "supported", (unsigned long long)s);
            r = -WSAEOPNOTSUPP;
        } else {
            r = socksify_carry_send(s, &g, bufs, nbufs, flags, sent);
        }
        if (r == 0)
            return 0;
    }
    WSASetLastError(-r);
    return SOCKET_ERROR;
}
