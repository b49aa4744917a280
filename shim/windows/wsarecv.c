/* WSARecv: as recv (recv.c). An overlapped WSARecv on a carried socket is refused
 * with WSAEOPNOTSUPP; one on another datagram socket keeps it from being carried
 * (carry.c). */
#include "shim.h"

int (WSAAPI *real_WSARecv)(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD, LPWSAOVERLAPPED,
                           LPWSAOVERLAPPED_COMPLETION_ROUTINE);

static int call_WSARecv(struct socksify_recv_call *c, DWORD *got)
{
    return real_WSARecv(c->s, c->bufs, c->nbufs, got, c->flags, (LPWSAOVERLAPPED)c->ov,
                        *(LPWSAOVERLAPPED_COMPLETION_ROUTINE *)c->arg);
}

int WSAAPI socksify_hook_WSARecv(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD got,
                                 LPDWORD flags, LPWSAOVERLAPPED ov,
                                 LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_recv_call c = {s, bufs, nbufs, flags, NULL, NULL, ov, call_WSARecv,
                                   NULL, &done};

    return socksify_carry_receive(&c, got);
}
