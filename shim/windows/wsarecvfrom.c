/* WSARecvFrom: as recvfrom (recvfrom.c). An overlapped WSARecvFrom on a carried socket
 * is refused with WSAEOPNOTSUPP; one on another datagram socket keeps it from being
 * carried (carry.c). */
#include "shim.h"

int (WSAAPI *real_WSARecvFrom)(SOCKET, LPWSABUF, DWORD, LPDWORD, LPDWORD,
                               struct sockaddr *, LPINT, LPWSAOVERLAPPED,
                               LPWSAOVERLAPPED_COMPLETION_ROUTINE);

static int call_WSARecvFrom(struct socksify_recv_call *c, DWORD *got)
{
    return real_WSARecvFrom(c->s, c->bufs, c->nbufs, got, c->flags, c->from, c->fromlen,
                            (LPWSAOVERLAPPED)c->ov,
                            *(LPWSAOVERLAPPED_COMPLETION_ROUTINE *)c->arg);
}

int WSAAPI socksify_hook_WSARecvFrom(SOCKET s, LPWSABUF bufs, DWORD nbufs, LPDWORD got,
                                     LPDWORD flags, struct sockaddr *from, LPINT fromlen,
                                     LPWSAOVERLAPPED ov,
                                     LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_recv_call c = {s, bufs, nbufs, flags, from, fromlen, ov,
                                   call_WSARecvFrom, NULL, &done};

    return socksify_carry_receive(&c, got);
}
