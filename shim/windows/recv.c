/* recv: on a carried datagram socket (carry.c) the envelope is stripped; a datagram
 * from the carrier without a valid envelope is never handed over. As recvfrom without
 * a source (recvfrom.c), but a socket that is not carried gets the real recv: Windows
 * hands recv and recvfrom to different provider entry points (WSPRecv, WSPRecvFrom),
 * which a layered provider may treat differently. */
#include "shim.h"

int (WSAAPI *real_recv)(SOCKET, char *, int, int);

static int call_recv(struct socksify_recv_call *c, DWORD *got)
{
    int r = real_recv(c->s, c->bufs[0].buf, *(const int *)c->arg, (int)*c->flags);

    if (r == SOCKET_ERROR)
        return SOCKET_ERROR;
    *got = (DWORD)r;
    return 0;
}

int WSAAPI socksify_hook_recv(SOCKET s, char *buf, int len, int flags)
{
    WSABUF b = {len < 0 ? 0 : (ULONG)len, buf};
    DWORD got = 0, fl = (DWORD)flags;
    struct socksify_recv_call c = {s, &b, 1, &fl, NULL, NULL, NULL, call_recv, NULL, &len};

    return socksify_carry_receive(&c, &got) == 0 ? (int)got : SOCKET_ERROR;
}
