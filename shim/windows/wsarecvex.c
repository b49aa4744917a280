/* WSARecvEx (mswsock): recv with the flags also returned: on a carried socket
 * (carry.c) the envelope is stripped as for recv, and a datagram cut to the buffer
 * returns the bytes that fit with MSG_PARTIAL set in *flags (the rest is discarded),
 * where recv fails with WSAEMSGSIZE. Any other socket gets the real WSARecvEx. */
#include "shim.h"

int (WINAPI *real_WSARecvEx)(SOCKET, char *, int, int *);

/* An import of mswsock's, so that it is loaded with the DLL and its WSARecvEx found
 * when the hooks are resolved. */
int (WINAPI *const socksify_mswsock_import)(SOCKET, char *, int, int *) = WSARecvEx;

static int call_WSARecvEx(struct socksify_recv_call *c, DWORD *got)
{
    int fl = (int)*c->flags;
    int r = real_WSARecvEx(c->s, c->bufs[0].buf, *(const int *)c->arg, &fl);

    *c->flags = (DWORD)fl;
    if (r == SOCKET_ERROR)
        return SOCKET_ERROR;
    *got = (DWORD)r;
    return 0;
}

int WINAPI socksify_hook_WSARecvEx(SOCKET s, char *buf, int len, int *flags)
{
    WSABUF b = {len < 0 ? 0 : (ULONG)len, buf};
    DWORD got = 0, fl = flags != NULL ? (DWORD)*flags & ~(DWORD)MSG_PARTIAL : 0;
    struct socksify_recv_call c = {s, &b, 1, &fl, NULL, NULL, NULL, call_WSARecvEx, NULL,
                                   &len};
    int r = socksify_carry_receive(&c, &got);

    if (r == SOCKET_ERROR && WSAGetLastError() == WSAEMSGSIZE) {
        fl |= MSG_PARTIAL;  /* what WSARecvEx reports instead of the error */
        r = 0;
    }
    if (r != 0)
        return SOCKET_ERROR;
    if (flags != NULL)
        *flags = (int)fl;
    return (int)got;
}
