/* WSARecvMsg, mswsock's extension handed out by WSAIoctl (SIO_GET_EXTENSION_FUNCTION_
 * POINTER, WSAID_WSARECVMSG; the WSAIoctl hook in connectex.c gives the program ours):
 * as WSARecvFrom (carry.c), with the source in msg->name and the flags in
 * msg->dwFlags; control data comes as the kernel gives it. An overlapped one on a
 * carried socket is refused with WSAEOPNOTSUPP. */
#include <string.h>

#include "shim.h"

static LPFN_WSARECVMSG real_WSARecvMsg;
static const GUID wsarecvmsg_id = WSAID_WSARECVMSG;

struct recvmsg_ctx {
    SOCKET s;
    LPWSAMSG msg;
    LPWSAOVERLAPPED_COMPLETION_ROUTINE done;
};

/* The carried path's reader: the program's message with our buffers and source. */
static int recvmsg_read(void *ctx, WSABUF *bufs, DWORD nbufs, DWORD *got, DWORD *flags,
                        struct sockaddr *from, int *fromlen)
{
    struct recvmsg_ctx *c = ctx;
    WSAMSG m = *c->msg;
    int r;

    m.lpBuffers = bufs;
    m.dwBufferCount = nbufs;
    m.name = from;
    m.namelen = fromlen != NULL ? *fromlen : 0;
    m.dwFlags = *flags;
    r = real_WSARecvMsg(c->s, &m, got, NULL, NULL);
    *flags = m.dwFlags;
    if (fromlen != NULL)
        *fromlen = m.namelen;
    c->msg->Control.len = m.Control.len;
    return r;
}

static int call_WSARecvMsg(struct socksify_recv_call *c, DWORD *got)
{
    struct recvmsg_ctx *x = c->arg;

    return real_WSARecvMsg(x->s, x->msg, got, (LPWSAOVERLAPPED)c->ov, x->done);
}

static int WSAAPI socksify_hook_WSARecvMsg(SOCKET s, LPWSAMSG msg, LPDWORD got,
                                           LPWSAOVERLAPPED ov,
                                           LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct recvmsg_ctx x = {s, msg, done};
    struct socksify_recv_call c;

    if (msg == NULL)
        return real_WSARecvMsg(s, msg, got, ov, done);
    c = (struct socksify_recv_call){s, msg->lpBuffers, msg->dwBufferCount, &msg->dwFlags,
                                    msg->name, msg->name != NULL ? &msg->namelen : NULL,
                                    ov, call_WSARecvMsg, recvmsg_read, &x};
    return socksify_carry_receive(&c, got);
}

void socksify_wsaioctl_recvmsg(const void *in, DWORD inlen, void *out, DWORD outlen)
{
    LPFN_WSARECVMSG real, ours = socksify_hook_WSARecvMsg;

    if (in == NULL || inlen < sizeof(GUID) || out == NULL || outlen < sizeof real
        || memcmp(in, &wsarecvmsg_id, sizeof(GUID)) != 0)
        return;
    memcpy(&real, out, sizeof real);
    if (real == NULL || real == ours)
        return;
    InterlockedExchangePointer((void **)&real_WSARecvMsg, (void *)real);
    memcpy(out, &ours, sizeof ours);
}
