/* WriteFile on a socket handle: on a datagram socket connected for a carried peer
 * (connect.c, carry.c) it is a send: the datagram goes enveloped to the daemon's
 * carrier; an overlapped one is refused (ERROR_NOT_SUPPORTED, nothing sent). Every
 * other handle gets the real WriteFile, after one flag's look until a socket of the
 * process is carried. */
#include "shim.h"

extern void *real_WriteFile;
typedef BOOL (WINAPI *writefile_fn)(HANDLE, LPCVOID, DWORD, LPDWORD, LPOVERLAPPED);

BOOL WINAPI socksify_hook_WriteFile(HANDLE h, LPCVOID buf, DWORD len, LPDWORD written,
                                    LPOVERLAPPED ov)
{
    struct socksify_grant g;
    WSABUF b = {len, (char *)buf};
    DWORD sent = 0;
    int r;

    if (!socksify_carry_active()
        || (r = socksify_carry_peer_fresh((SOCKET)h, &g)) == 0)
        return ((writefile_fn)real_WriteFile)(h, buf, len, written, ov);
    if (r > 0 && ov != NULL) {
        LOG_INFO("socket %llu: overlapped sends of carried datagrams are not supported",
                 (unsigned long long)(SOCKET)h);
        r = -WSAEOPNOTSUPP;
    } else if (r > 0) {
        r = socksify_carry_send((SOCKET)h, &g, &b, 1, 0, &sent);
    }
    if (r == 0) {
        if (written != NULL)
            *written = sent;
        return TRUE;
    }
    SetLastError(socksify_wsa_to_win32(-r));
    return FALSE;
}
