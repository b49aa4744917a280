/* WSASendMsg, exported by ws2_32 (Vista and later) and handed out by WSAIoctl
 * (SIO_GET_EXTENSION_FUNCTION_POINTER, WSAID_WSASENDMSG; the WSAIoctl hook in
 * connectex.c gives the program ours): as WSASendTo, with the destination in
 * msg->name. A refusal fails at once, overlapped or not; nothing is sent. A carried
 * datagram goes enveloped to the carrier without its control data (carry.c). */
#include <string.h>

#include "shim.h"

LPFN_WSASENDMSG real_WSASendMsg;
/* The pointer WSAIoctl handed out, when it is not ws2_32's export. */
static LPFN_WSASENDMSG ext_WSASendMsg;

static const GUID wsasendmsg_id = WSAID_WSASENDMSG;

static int wsasendmsg_run(LPFN_WSASENDMSG real, SOCKET s, LPWSAMSG msg, DWORD flags,
                          LPDWORD sent, LPWSAOVERLAPPED ov,
                          LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_grant g;
    int r = msg != NULL ? socksify_datagram_route(s, msg->name, msg->namelen, &g)
                        : SOCKSIFY_DGRAM_SEND;

    if (r == SOCKSIFY_DGRAM_CARRY) {  /* control data (msg->Control) is not carried */
        if (ov != NULL) {
            LOG_INFO("socket %llu: overlapped sends of carried datagrams are not "
                     "supported", (unsigned long long)s);
            r = -WSAEOPNOTSUPP;
        } else {
            r = socksify_carry_send(s, &g, msg->lpBuffers, msg->dwBufferCount,
                                    flags, sent);
        }
        if (r == 0)
            return 0;
    }
    if (r < 0) {
        WSASetLastError(-r);
        return SOCKET_ERROR;
    }
    if (real == NULL) {  /* cannot happen: ours is only handed out for a real one */
        WSASetLastError(WSAEOPNOTSUPP);
        return SOCKET_ERROR;
    }
    return real(s, msg, flags, sent, ov, done);
}

int WSAAPI socksify_hook_WSASendMsg(SOCKET s, LPWSAMSG msg, DWORD flags, LPDWORD sent,
                                    LPWSAOVERLAPPED ov,
                                    LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    return wsasendmsg_run(real_WSASendMsg, s, msg, flags, sent, ov, done);
}

static int WSAAPI socksify_hook_WSASendMsg_ext(SOCKET s, LPWSAMSG msg, DWORD flags,
                                               LPDWORD sent, LPWSAOVERLAPPED ov,
                                               LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    return wsasendmsg_run(ext_WSASendMsg, s, msg, flags, sent, ov, done);
}

void socksify_wsaioctl_sendmsg(const void *in, DWORD inlen, void *out, DWORD outlen)
{
    LPFN_WSASENDMSG real, ours = socksify_hook_WSASendMsg,
                          ext = socksify_hook_WSASendMsg_ext;

    if (in == NULL || inlen < sizeof(GUID) || out == NULL || outlen < sizeof real
        || memcmp(in, &wsasendmsg_id, sizeof(GUID)) != 0)
        return;
    memcpy(&real, out, sizeof real);
    if (real == NULL || real == ours || real == ext)
        return;
    if (real != real_WSASendMsg) {  /* not the export (or a Windows without it) */
        InterlockedExchangePointer((void **)&ext_WSASendMsg, (void *)real);
        ours = ext;
    }
    memcpy(out, &ours, sizeof ours);
}
