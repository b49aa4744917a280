/* WriteFileEx on a socket handle: always overlapped (a completion routine), so on a
 * datagram socket connected for a carried peer it is refused with ERROR_NOT_SUPPORTED
 * (it would hand the carrier the datagram without an envelope; nothing is sent), as an
 * overlapped WriteFile. Every other handle gets the real WriteFileEx. */
#include "shim.h"

extern void *real_WriteFileEx;
typedef BOOL (WINAPI *writefileex_fn)(HANDLE, LPCVOID, DWORD, LPOVERLAPPED,
                                      LPOVERLAPPED_COMPLETION_ROUTINE);

BOOL WINAPI socksify_hook_WriteFileEx(HANDLE h, LPCVOID buf, DWORD len, LPOVERLAPPED ov,
                                      LPOVERLAPPED_COMPLETION_ROUTINE done)
{
    struct socksify_grant g;

    if (socksify_carry_active() && socksify_carry_peer((SOCKET)h, &g)) {
        LOG_INFO("socket %llu: overlapped sends of carried datagrams are not supported",
                 (unsigned long long)(SOCKET)h);
        SetLastError(ERROR_NOT_SUPPORTED);
        return FALSE;
    }
    return ((writefileex_fn)real_WriteFileEx)(h, buf, len, ov, done);
}
