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
};

static int recvmsg_real(void *ctx, WSABUF *bufs, DWORD nbufs, DWORD *got, DWORD *flags,
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

static int WSAAPI socksify_hook_WSARecvMsg(SOCKET s, LPWSAMSG msg, LPDWORD got,
                                           LPWSAOVERLAPPED ov,
                                           LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct recvmsg_ctx ctx = {s, msg};

    if (msg == NULL)
        return real_WSARecvMsg(s, msg, got, ov, done);
    for (;;) {
        DWORD n = 0, fl = msg->dwFlags;
        int namelen = msg->namelen;
        int r = socksify_carry_recv(s, msg->lpBuffers, msg->dwBufferCount, &n, &fl,
                                    msg->name, msg->name != NULL ? &namelen : NULL, ov,
                                    recvmsg_real, &ctx);

        if (r == 0 || (r == SOCKET_ERROR && WSAGetLastError() == WSAEMSGSIZE)) {
            if (got != NULL)
                *got = n;
            msg->dwFlags = fl;
            msg->namelen = namelen;
            return r;
        }
        if (r == SOCKET_ERROR)
            return r;
        r = real_WSARecvMsg(s, msg, got, ov, done);
        if (ov == NULL && got != NULL && msg->dwBufferCount > 0
            && (r == 0 || (msg->dwBufferCount == 1 && WSAGetLastError() == WSAEMSGSIZE))) {
            int err = r == 0 ? 0 : WSAEMSGSIZE;
            DWORD n = r == 0 ? *got : msg->lpBuffers[0].len;
            switch (socksify_carry_after(s, msg->lpBuffers[0].buf, &n, msg->dwBufferCount == 1 || n <= msg->lpBuffers[0].len,
                                         msg->name, msg->name != NULL ? &msg->namelen : NULL)) {
            case SOCKSIFY_AFTER_DROP:
                if (msg->dwFlags & MSG_PEEK)
                    socksify_carry_consume(s);
                continue;
            case SOCKSIFY_AFTER_STRIPPED:
                *got = n;
                if (err != 0) {
                    WSASetLastError(err);
                    return SOCKET_ERROR;
                }
                return 0;
            }
        }
        return r;
    }
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
