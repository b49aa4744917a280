/* recvfrom: on a carried datagram socket (carry.c) the envelope is stripped and the
 * remote it names is the source; a datagram from the carrier without a valid envelope
 * is never handed over. */
#include "shim.h"

int (WSAAPI *real_recvfrom)(SOCKET, char *, int, int, struct sockaddr *, int *);

static int call_recvfrom(struct socksify_recv_call *c, DWORD *got)
{
    int r = real_recvfrom(c->s, c->bufs[0].buf, *(const int *)c->arg, (int)*c->flags,
                          c->from, c->fromlen);

    if (r == SOCKET_ERROR)
        return SOCKET_ERROR;
    *got = (DWORD)r;
    return 0;
}

int WSAAPI socksify_hook_recvfrom(SOCKET s, char *buf, int len, int flags,
                                  struct sockaddr *from, int *fromlen)
{
    WSABUF b = {len < 0 ? 0 : (ULONG)len, buf};
    DWORD got = 0, fl = (DWORD)flags;
    struct socksify_recv_call c = {s, &b, 1, &fl, from, fromlen, NULL, call_recvfrom,
                                   NULL, &len};

    return socksify_carry_receive(&c, &got) == 0 ? (int)got : SOCKET_ERROR;
}
