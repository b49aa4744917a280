/* ReadFileEx on a socket handle: always overlapped (a completion routine), so on a
 * carried datagram socket it is refused with ERROR_NOT_SUPPORTED (the routine would be
 * handed the envelope as data; nothing is read), and one on another datagram socket
 * keeps it from being carried, as an overlapped ReadFile or WSARecv (carry.c). Every
 * other handle gets the real ReadFileEx. */
#include "shim.h"

extern void *real_ReadFileEx;
typedef BOOL (WINAPI *readfileex_fn)(HANDLE, LPVOID, DWORD, LPOVERLAPPED,
                                     LPOVERLAPPED_COMPLETION_ROUTINE);

static int call_ReadFileEx(struct socksify_recv_call *c, DWORD *got)
{
    (void)got;
    return ((readfileex_fn)real_ReadFileEx)((HANDLE)c->s, c->bufs[0].buf, c->bufs[0].len,
                                            (LPOVERLAPPED)c->ov,
                                            *(LPOVERLAPPED_COMPLETION_ROUTINE *)c->arg)
               ? 0 : SOCKET_ERROR;
}

BOOL WINAPI socksify_hook_ReadFileEx(HANDLE h, LPVOID buf, DWORD len, LPOVERLAPPED ov,
                                     LPOVERLAPPED_COMPLETION_ROUTINE done)
{
    WSABUF b = {len, buf};
    DWORD fl = 0, scrap = 0;
    struct socksify_recv_call c = {(SOCKET)h, &b, 1, &fl, NULL, NULL, ov, call_ReadFileEx,
                                   NULL, &done};

    if (ov == NULL)  /* not a valid call: the real one says so */
        return ((readfileex_fn)real_ReadFileEx)(h, buf, len, ov, done);
    if (socksify_carry_receive(&c, &scrap) == 0)
        return TRUE;
    SetLastError(socksify_wsa_to_win32(WSAGetLastError()));
    return FALSE;
}
