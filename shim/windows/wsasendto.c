/* WSASendTo: as sendto (datagram.c decides). A refusal fails at once, overlapped or
 * not: SOCKET_ERROR with the error, no completion posted, the event and the
 * completion routine untouched, nothing sent. The daemon is asked on the calling
 * thread, before the real call. */
#include "shim.h"

int (WSAAPI *real_WSASendTo)(SOCKET, LPWSABUF, DWORD, LPDWORD, DWORD,
                             const struct sockaddr *, int, LPWSAOVERLAPPED,
                             LPWSAOVERLAPPED_COMPLETION_ROUTINE);

int WSAAPI socksify_hook_WSASendTo(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD sent,
                                   DWORD flags, const struct sockaddr *to, int tolen,
                                   LPWSAOVERLAPPED ov,
                                   LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    int r = socksify_datagram_check(s, to, tolen);

    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    return real_WSASendTo(s, bufs, nbufs, sent, flags, to, tolen, ov, done);
}
