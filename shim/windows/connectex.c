/* ConnectEx (mswsock's extension, obtained through WSAIoctl with
 * SIO_GET_EXTENSION_FUNCTION_POINTER: the program gets our pointer) and
 * CreateIoCompletionPort (to know where a socket's completions go).
 *
 * An overlapped ConnectEx to a destination the daemon must be asked about returns
 * ERROR_IO_PENDING at once; a worker thread asks the daemon, builds the chain, attaches
 * the socket to the relay and sends the token, then completes the program's OVERLAPPED:
 *  - success: a real overlapped WSASend of the program's send buffer (zero bytes if it
 *    gave none) with the program's OVERLAPPED, so its completion port, event or
 *    GetOverlappedResult see an ordinary completion with the bytes sent;
 *  - failure: the OVERLAPPED gets the NTSTATUS of the error, the completion packet goes
 *    to the socket's completion port with that status (NtSetIoCompletion: the program's
 *    GetQueuedCompletionStatus returns FALSE with the matching error), and its event is
 *    set. A socket bound to a port socksify never saw (thread-pool I/O binds it with
 *    NtSetInformationFile, not CreateIoCompletionPort) gets a real ConnectEx to a
 *    loopback port where nothing listens: the kernel completes it wherever the
 *    program's completions go, always as ERROR_CONNECTION_REFUSED;
 *  - DIRECT: the real ConnectEx with the program's arguments. */
#include <string.h>

#include "shim.h"

extern void *real_CreateIoCompletionPort;

#ifndef STATUS_PENDING
#define STATUS_PENDING ((DWORD)0x00000103L)
#endif

static LPFN_CONNECTEX real_ConnectEx;
static const GUID connectex_id = WSAID_CONNECTEX;

/* ---- which completion port each socket was associated with ---------------------- */

#define IOCP_SLOTS 1024

static struct { HANDLE file, port; ULONG_PTR key; } iocp_table[IOCP_SLOTS];
static SRWLOCK iocp_lock = SRWLOCK_INIT;

void socksify_iocp_note(HANDLE file, HANDLE port, ULONG_PTR key)
{
    size_t i, free_slot = IOCP_SLOTS;

    AcquireSRWLockExclusive(&iocp_lock);
    for (i = 0; i < IOCP_SLOTS; i++) {
        if (iocp_table[i].file == file)
            break;
        if (iocp_table[i].file == NULL && free_slot == IOCP_SLOTS)
            free_slot = i;
    }
    if (i == IOCP_SLOTS)
        i = free_slot != IOCP_SLOTS ? free_slot : (size_t)((ULONG_PTR)file / 4 % IOCP_SLOTS);
    iocp_table[i].file = file;
    iocp_table[i].port = port;
    iocp_table[i].key = key;
    ReleaseSRWLockExclusive(&iocp_lock);
}

int socksify_iocp_find(HANDLE file, HANDLE *port, ULONG_PTR *key)
{
    int found = 0;

    AcquireSRWLockShared(&iocp_lock);
    for (size_t i = 0; i < IOCP_SLOTS; i++)
        if (iocp_table[i].file == file) {
            *port = iocp_table[i].port;
            *key = iocp_table[i].key;
            found = 1;
            break;
        }
    ReleaseSRWLockShared(&iocp_lock);
    return found;
}

HANDLE WINAPI socksify_hook_CreateIoCompletionPort(HANDLE file, HANDLE existing,
                                                   ULONG_PTR key, DWORD threads)
{
    HANDLE port = ((HANDLE (WINAPI *)(HANDLE, HANDLE, ULONG_PTR, DWORD))
                   real_CreateIoCompletionPort)(file, existing, key, threads);

    if (port != NULL && file != INVALID_HANDLE_VALUE && file != NULL)
        socksify_iocp_note(file, port, key);
    return port;
}

/* ---- completing the program's OVERLAPPED --------------------------------------- */

static DWORD wsa_to_status(int err)
{
    switch (err) {
    case WSAETIMEDOUT:    return 0xC00000B5L;  /* STATUS_IO_TIMEOUT */
    case WSAEACCES:       return 0xC0000022L;  /* STATUS_ACCESS_DENIED */
    case WSAENETUNREACH:  return 0xC000023CL;  /* STATUS_NETWORK_UNREACHABLE */
    case WSAEHOSTUNREACH: return 0xC000023DL;  /* STATUS_HOST_UNREACHABLE */
    case WSAECONNRESET:   return 0xC000020DL;  /* STATUS_CONNECTION_RESET */
    case WSAEAFNOSUPPORT: return 0xC0000141L;  /* STATUS_INVALID_ADDRESS */
    default:              return 0xC0000236L;  /* STATUS_CONNECTION_REFUSED */
    }
}

/* How long the refusing port stays bound: Windows retries a refused loopback SYN for
 * about 2 s before it completes the ConnectEx. */
#define REFUSE_HOLD_MS 10000

/* The program's completion goes somewhere socksify does not know: have the kernel
 * deliver a refusal there, by a real ConnectEx of the (unconnected, bound) socket to a
 * loopback port held bound, not listening, by a socket of ours. 0 if under way. */
static int refuse_through_kernel(SOCKET s, LPOVERLAPPED ov)
{
    struct sockaddr_storage local, closed_addr;
    int local_len = sizeof local, closed_len = sizeof closed_addr, err = 0;
    SOCKET closed;
    DWORD sent = 0;

    if (real_ConnectEx == NULL
        || getsockname(s, (struct sockaddr *)&local, &local_len) != 0)
        return -1;
    closed = socket(local.ss_family, SOCK_STREAM, IPPROTO_TCP);
    if (closed == INVALID_SOCKET)
        return -1;
    memset(&closed_addr, 0, sizeof closed_addr);
    closed_addr.ss_family = local.ss_family;
    if (local.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&closed_addr)->sin6_addr = in6addr_loopback;
    else
        ((struct sockaddr_in *)&closed_addr)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(closed, (struct sockaddr *)&closed_addr, local.ss_family == AF_INET6
             ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in)) != 0
        || getsockname(closed, (struct sockaddr *)&closed_addr, &closed_len) != 0)
        err = -1;
    else if (!real_ConnectEx(s, (struct sockaddr *)&closed_addr, closed_len, NULL, 0,
                             &sent, ov) && WSAGetLastError() != WSA_IO_PENDING)
        err = -1;
    else
        Sleep(REFUSE_HOLD_MS);  /* (the worker's own thread) nobody may listen there
                                 * while Windows retries the refused SYN; ov may be
                                 * the program's again already, so it is not polled */
    closesocket(closed);
    return err;
}

typedef LONG (NTAPI *set_io_completion_fn)(HANDLE, ULONG_PTR, ULONG_PTR, LONG, ULONG_PTR);

static void complete_failed(SOCKET s, LPOVERLAPPED ov, int err)
{
    static set_io_completion_fn set_io_completion;
    HANDLE event = (HANDLE)((ULONG_PTR)ov->hEvent & ~(ULONG_PTR)1), port;
    ULONG_PTR key;
    DWORD status = wsa_to_status(err);
    int delivered = 0;

    if (set_io_completion == NULL)
        set_io_completion = (set_io_completion_fn)(void *)real_GetProcAddress(
            GetModuleHandleW(L"ntdll.dll"), "NtSetIoCompletion");
    ov->InternalHigh = 0;
    ov->Internal = status;
    if (!((ULONG_PTR)ov->hEvent & 1) && set_io_completion != NULL
        && socksify_iocp_find((HANDLE)s, &port, &key)) {
        set_io_completion(port, key, (ULONG_PTR)ov, (LONG)status, 0);
        delivered = 1;
    }
    if (event != NULL) {
        SetEvent(event);
        delivered = 1;
    }
    if (delivered)
        return;
    if (refuse_through_kernel(s, ov) == 0) {
        LOG_INFO("socket %llu: ConnectEx failed (error %d); its completion port is not "
                 "known (thread-pool I/O?), so it completes as refused",
                 (unsigned long long)s, err);
        return;
    }
    LOG_WARN("socket %llu: ConnectEx failed (error %d) and its completion cannot be "
             "delivered; the program is not told", (unsigned long long)s, err);
}

static void complete_connected(SOCKET s, LPOVERLAPPED ov, PVOID buf, DWORD len)
{
    static char nothing;
    WSABUF b;
    DWORD sent = 0;

    b.buf = buf != NULL && len > 0 ? buf : &nothing;
    b.len = buf != NULL ? len : 0;
    if (WSASend(s, &b, 1, &sent, 0, ov, NULL) == 0 || WSAGetLastError() == WSA_IO_PENDING)
        return;  /* the completion goes wherever the program's I/O goes */
    complete_failed(s, ov, WSAGetLastError());
}

struct connectex_job {
    SOCKET s;
    struct sockaddr_storage addr;
    int len;
    PVOID buf;
    DWORD buflen;
    LPOVERLAPPED ov;
};

static DWORD WINAPI connectex_worker(LPVOID param)
{
    struct connectex_job *job = param;
    struct socksify_reply rep;
    const struct sockaddr *addr = (const struct sockaddr *)&job->addr;
    DWORD sent = 0;
    int err = 0;

    switch (socksify_connect_ask(job->s, addr, job->len, &rep, &err)) {
    case SOCKSIFY_GO_DIRECT:
        if (!real_ConnectEx(job->s, addr, job->len, job->buf, job->buflen, &sent, job->ov)
            && WSAGetLastError() != WSA_IO_PENDING)
            complete_failed(job->s, job->ov, WSAGetLastError());
        break;
    case SOCKSIFY_GO_CARRY:  /* datagram sockets only: never for ConnectEx */
        complete_failed(job->s, job->ov, WSAECONNREFUSED);
        break;
    case SOCKSIFY_GO_RELAY:
        if ((err = socksify_connect_attach(job->s, addr, &rep)) == 0) {
            complete_connected(job->s, job->ov, job->buf, job->buflen);
            break;
        }
        /* fall through */
    case SOCKSIFY_GO_FAIL:
        complete_failed(job->s, job->ov, err);
        break;
    }
    HeapFree(GetProcessHeap(), 0, job);
    return 0;
}

static BOOL PASCAL socksify_hook_ConnectEx(SOCKET s, const struct sockaddr *name,
                                           int namelen, PVOID buf, DWORD buflen,
                                           LPDWORD sent, LPOVERLAPPED ov)
{
    struct sockaddr_storage local;
    struct connectex_job *job;
    int local_len = sizeof local;
    HANDLE thread;

    if (ov == NULL || namelen <= 0 || (size_t)namelen > sizeof job->addr
        || !socksify_connect_needs_daemon(s, name, namelen)
        || getsockname(s, (struct sockaddr *)&local, &local_len) != 0)
        return real_ConnectEx(s, name, namelen, buf, buflen, sent, ov);  /* it judges */
    job = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof *job);
    if (job == NULL) {
        WSASetLastError(WSAENOBUFS);
        return FALSE;
    }
    job->s = s;
    memcpy(&job->addr, name, (size_t)namelen);
    job->len = namelen;
    job->buf = buf;
    job->buflen = buflen;
    job->ov = ov;
    ov->Internal = STATUS_PENDING;
    ov->InternalHigh = 0;
    if (ov->hEvent != NULL)
        ResetEvent((HANDLE)((ULONG_PTR)ov->hEvent & ~(ULONG_PTR)1));
    thread = CreateThread(NULL, 0, connectex_worker, job, 0, NULL);
    if (thread == NULL) {
        HeapFree(GetProcessHeap(), 0, job);
        WSASetLastError(WSAENOBUFS);
        return FALSE;
    }
    CloseHandle(thread);
    WSASetLastError(WSA_IO_PENDING);
    return FALSE;
}

/* ---- WSAIoctl: hand out our ConnectEx, WSASendMsg, WSARecvMsg, TransmitFile and
 * TransmitPackets --------------------------------------------------------------- */

int WSAAPI socksify_hook_WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD inlen, LPVOID out,
                                  DWORD outlen, LPDWORD returned, LPWSAOVERLAPPED ov,
                                  LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    int r = real_WSAIoctl(s, code, in, inlen, out, outlen, returned, ov, done);
    LPFN_CONNECTEX real, ours = socksify_hook_ConnectEx;

    if (r == 0 && code == SIO_GET_EXTENSION_FUNCTION_POINTER && in != NULL
        && inlen >= sizeof(GUID) && memcmp(in, &connectex_id, sizeof(GUID)) == 0
        && out != NULL && outlen >= sizeof real) {
        memcpy(&real, out, sizeof real);
        if (real != ours) {
            InterlockedExchangePointer((void **)&real_ConnectEx, (void *)real);
            memcpy(out, &ours, sizeof ours);
        }
    }
    if (r == 0 && code == SIO_GET_EXTENSION_FUNCTION_POINTER) {
        socksify_wsaioctl_sendmsg(in, inlen, out, outlen);  /* wsasendmsg.c */
        socksify_wsaioctl_recvmsg(in, inlen, out, outlen);  /* wsarecvmsg.c */
        socksify_wsaioctl_transmit(in, inlen, out, outlen); /* transmit.c */
    }
    return r;
}
