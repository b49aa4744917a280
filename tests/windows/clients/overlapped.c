/* Overlapped ConnectEx (from WSAIoctl SIO_GET_EXTENSION_FUNCTION_POINTER) with the
 * request as its send buffer, completed through an I/O completion port. */
#include "client.h"

int main(int argc, char **argv)
{
    struct sockaddr_in sin, any;
    GUID id = WSAID_CONNECTEX;
    LPFN_CONNECTEX connect_ex = NULL;
    DWORD got = 0, bytes = 0;
    ULONG_PTR key = 0;
    OVERLAPPED ov, *done = NULL;
    char req[256];
    HANDLE port;
    SOCKET s;

    start(argc, argv, 3);
    sin = target(argv[1], argv[2]);
    s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    memset(&any, 0, sizeof any);
    any.sin_family = AF_INET;
    if (bind(s, (struct sockaddr *)&any, sizeof any) != 0)
        return fail(WSAGetLastError(), "bind");
    port = CreateIoCompletionPort((HANDLE)s, NULL, 42, 0);
    if (port == NULL)
        return fail((int)GetLastError(), "CreateIoCompletionPort");
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &connect_ex,
                 sizeof connect_ex, &got, NULL, NULL) != 0)
        return fail(WSAGetLastError(), "WSAIoctl");
    make_request(req, sizeof req, argv[3]);
    memset(&ov, 0, sizeof ov);
    if (!connect_ex(s, (struct sockaddr *)&sin, sizeof sin, req, (DWORD)strlen(req), &got,
                    &ov)) {
        int err = WSAGetLastError();
        if (err != ERROR_IO_PENDING)
            return fail(err, "ConnectEx");
    }
    if (!GetQueuedCompletionStatus(port, &bytes, &key, &done, 60000)) {
        if (done == NULL)
            return fail((int)GetLastError(), "GetQueuedCompletionStatus-timeout");
        return fail((int)GetLastError(), "ConnectEx-completion");
    }
    if (done != &ov || key != 42)
        return fail(WSAEINVAL, "wrong-completion");
    if (bytes != strlen(req))
        return fail(WSAEMSGSIZE, "bytes-sent");
    if (setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
        return fail(WSAGetLastError(), "SO_UPDATE_CONNECT_CONTEXT");
    return http_exchange(s, argv[3], 1);
}
