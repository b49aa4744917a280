/* ReadFile on a socket handle (a socket is a file handle on Windows): on a carried
 * datagram socket it is a recv (carry.c): the envelope stripped, a datagram from the
 * carrier without a valid envelope never handed over; an overlapped ReadFile there is
 * refused (ERROR_NOT_SUPPORTED) and one on another datagram socket keeps it from being
 * carried, as WSARecv. Every other handle gets the real ReadFile (once a socket of the
 * process is carried, carry.c looks at the data's first bytes: a ReadFile begun
 * before a socket's first carried send gets its envelope stripped, as recv; an
 * overlapped one asks whether the handle is a datagram socket). Errors as a real
 * ReadFile on a socket gives them (the NTSTATUS's Win32 error): a datagram cut to the
 * buffer fails with ERROR_MORE_DATA and the bytes that fit. */
#include "shim.h"

extern void *real_ReadFile;
typedef BOOL (WINAPI *readfile_fn)(HANDLE, LPVOID, DWORD, LPDWORD, LPOVERLAPPED);

static int call_ReadFile(struct socksify_recv_call *c, DWORD *got)
{
    LPDWORD read = c->arg;
    BOOL ok = ((readfile_fn)real_ReadFile)((HANDLE)c->s, c->bufs[0].buf, c->bufs[0].len,
                                           read, (LPOVERLAPPED)c->ov);

    if (!ok) {
        if (GetLastError() != ERROR_MORE_DATA)
            return SOCKET_ERROR;
        WSASetLastError(WSAEMSGSIZE);  /* the datagram was cut: as recv would say */
        return SOCKET_ERROR;
    }
    *got = read != NULL ? *read : 0;
    return 0;
}

BOOL WINAPI socksify_hook_ReadFile(HANDLE h, LPVOID buf, DWORD len, LPDWORD read,
                                   LPOVERLAPPED ov)
{
    WSABUF b = {len, buf};
    DWORD fl = 0, scrap = 0;
    struct socksify_recv_call c = {(SOCKET)h, &b, 1, &fl, NULL, NULL, ov, call_ReadFile,
                                   NULL, read};

    if (socksify_carry_receive(&c, read != NULL ? read : &scrap) == 0)
        return TRUE;
    SetLastError(socksify_wsa_to_win32(WSAGetLastError()));
    return FALSE;
}
