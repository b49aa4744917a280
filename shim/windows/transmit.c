/* TransmitFile and TransmitPackets, mswsock's extensions handed out by WSAIoctl
 * (SIO_GET_EXTENSION_FUNCTION_POINTER; the WSAIoctl hook in connectex.c gives the
 * program ours; TransmitFile is also exported by mswsock, hooked in hook.c). On a
 * datagram socket connected for a carried peer they would send the program's bytes to
 * the carrier without an envelope: refused with WSAEOPNOTSUPP (overlapped or not: no
 * completion posted, nothing sent). Every other socket gets the real call. */
#include <string.h>

#include "shim.h"

BOOL (PASCAL *real_TransmitFile)(SOCKET, HANDLE, DWORD, DWORD, LPOVERLAPPED,
                                 LPTRANSMIT_FILE_BUFFERS, DWORD);
/* The pointers WSAIoctl handed out (TransmitFile's when it is not the export). */
static LPFN_TRANSMITFILE ext_TransmitFile;
static LPFN_TRANSMITPACKETS ext_TransmitPackets;
static const GUID transmitfile_id = WSAID_TRANSMITFILE;
static const GUID transmitpackets_id = WSAID_TRANSMITPACKETS;

/* 1 (WSAEOPNOTSUPP set) if s is connected for a carried peer. */
static int refused(SOCKET s, const char *what)
{
    struct socksify_grant g;

    if (!socksify_carry_peer(s, &g))
        return 0;
    LOG_INFO("socket %llu: %s on a carried datagram socket is not supported",
             (unsigned long long)s, what);
    WSASetLastError(WSAEOPNOTSUPP);
    return 1;
}

BOOL PASCAL socksify_hook_TransmitFile(SOCKET s, HANDLE file, DWORD len, DWORD per,
                                       LPOVERLAPPED ov, LPTRANSMIT_FILE_BUFFERS bufs,
                                       DWORD flags)
{
    if (refused(s, "TransmitFile"))
        return FALSE;
    return real_TransmitFile(s, file, len, per, ov, bufs, flags);
}

static BOOL PASCAL hook_TransmitFile_ext(SOCKET s, HANDLE file, DWORD len, DWORD per,
                                         LPOVERLAPPED ov, LPTRANSMIT_FILE_BUFFERS bufs,
                                         DWORD flags)
{
    if (refused(s, "TransmitFile"))
        return FALSE;
    return ext_TransmitFile(s, file, len, per, ov, bufs, flags);
}

static BOOL PASCAL hook_TransmitPackets(SOCKET s, LPTRANSMIT_PACKETS_ELEMENT elems,
                                        DWORD n, DWORD per, LPOVERLAPPED ov, DWORD flags)
{
    if (refused(s, "TransmitPackets"))
        return FALSE;
    return ext_TransmitPackets(s, elems, n, per, ov, flags);
}

void socksify_wsaioctl_transmit(const void *in, DWORD inlen, void *out, DWORD outlen)
{
    void *real, *ours;

    if (in == NULL || inlen < sizeof(GUID) || out == NULL || outlen < sizeof real)
        return;
    memcpy(&real, out, sizeof real);
    if (memcmp(in, &transmitfile_id, sizeof(GUID)) == 0) {
        LPFN_TRANSMITFILE mine = hook_TransmitFile_ext, exported = socksify_hook_TransmitFile;
        if (real == NULL || real == (void *)mine || real == (void *)exported)
            return;
        InterlockedExchangePointer((void **)&ext_TransmitFile, real);
        ours = (void *)mine;
    } else if (memcmp(in, &transmitpackets_id, sizeof(GUID)) == 0) {
        LPFN_TRANSMITPACKETS mine = hook_TransmitPackets;
        if (real == NULL || real == (void *)mine)
            return;
        InterlockedExchangePointer((void **)&ext_TransmitPackets, real);
        ours = (void *)mine;
    } else {
        return;
    }
    memcpy(out, &ours, sizeof ours);
}
