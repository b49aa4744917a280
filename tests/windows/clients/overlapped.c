/* Overlapped ConnectEx (from WSAIoctl SIO_GET_EXTENSION_FUNCTION_POINTER) with the
 * request as its send buffer, completed through an I/O completion port of its own, or
 * with COMPLETION=threadpool through the thread pool (CreateThreadpoolIo, as .NET and
 * many libraries do: the socket is bound to the pool's port without
 * CreateIoCompletionPort). */
#include "client.h"

static HANDLE pool_done;
static OVERLAPPED *pool_ov;
static ULONG pool_result;
static ULONG_PTR pool_bytes;

static VOID CALLBACK pool_callback(PTP_CALLBACK_INSTANCE inst, PVOID ctx, PVOID ov,
                                   ULONG result, ULONG_PTR bytes, PTP_IO io)
{
    (void)inst; (void)ctx; (void)io;
    pool_ov = ov;
    pool_result = result;
    pool_bytes = bytes;
    SetEvent(pool_done);
}

/* Wait for the completion of ov; 0, or the client's failure exit. */
static int completed(HANDLE port, PTP_IO io, OVERLAPPED *ov, DWORD *bytes)
{
    ULONG_PTR key = 0;
    OVERLAPPED *done = NULL;

    if (io != NULL) {
        if (WaitForSingleObject(pool_done, 60000) != WAIT_OBJECT_0)
            return fail(WAIT_TIMEOUT, "threadpool-timeout");
        if (pool_result != 0)
            return fail((int)pool_result, "ConnectEx-completion");
        if (pool_ov != ov)
            return fail(WSAEINVAL, "wrong-completion");
        *bytes = (DWORD)pool_bytes;
        return 0;
    }
    if (!GetQueuedCompletionStatus(port, bytes, &key, &done, 60000)) {
        if (done == NULL)
            return fail((int)GetLastError(), "GetQueuedCompletionStatus-timeout");
        return fail((int)GetLastError(), "ConnectEx-completion");
    }
    if (done != ov || key != 42)
        return fail(WSAEINVAL, "wrong-completion");
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sin, any;
    GUID id = WSAID_CONNECTEX;
    LPFN_CONNECTEX connect_ex = NULL;
    DWORD got = 0, bytes = 0;
    OVERLAPPED ov;
    char req[256];
    const char *mode = getenv("COMPLETION");
    HANDLE port = NULL;
    PTP_IO io = NULL;
    SOCKET s;
    int r;

    start(argc, argv, 3);
    sin = target(argv[1], argv[2]);
    s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    memset(&any, 0, sizeof any);
    any.sin_family = AF_INET;
    if (bind(s, (struct sockaddr *)&any, sizeof any) != 0)
        return fail(WSAGetLastError(), "bind");
    if (mode != NULL && strcmp(mode, "threadpool") == 0) {
        pool_done = CreateEventW(NULL, TRUE, FALSE, NULL);
        io = CreateThreadpoolIo((HANDLE)s, pool_callback, NULL, NULL);
        if (io == NULL)
            return fail((int)GetLastError(), "CreateThreadpoolIo");
        StartThreadpoolIo(io);
    } else {
        port = CreateIoCompletionPort((HANDLE)s, NULL, 42, 0);
        if (port == NULL)
            return fail((int)GetLastError(), "CreateIoCompletionPort");
    }
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &connect_ex,
                 sizeof connect_ex, &got, NULL, NULL) != 0)
        return fail(WSAGetLastError(), "WSAIoctl");
    make_request(req, sizeof req, argv[3]);
    memset(&ov, 0, sizeof ov);
    if (!connect_ex(s, (struct sockaddr *)&sin, sizeof sin, req, (DWORD)strlen(req), &got,
                    &ov)) {
        int err = WSAGetLastError();
        if (err != ERROR_IO_PENDING) {
            if (io != NULL)
                CancelThreadpoolIo(io);
            return fail(err, "ConnectEx");
        }
    }
    if ((r = completed(port, io, &ov, &bytes)) != 0)
        return r;
    if (bytes != strlen(req))
        return fail(WSAEMSGSIZE, "bytes-sent");
    if (setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
        return fail(WSAGetLastError(), "SO_UPDATE_CONNECT_CONTEXT");
    return http_exchange(s, argv[3], 1);
}
