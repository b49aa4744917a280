/* A program with its own resolver: sends one DNS query (type A) for MARKER as a UDP
 * datagram to HOST PORT from an unconnected socket, then waits up to 5 s for an
 * answer. How it sends, by UDPSEND:
 *     sendto (default)
 *     WSASendTo
 *     overlapped   WSASendTo on a WSA_FLAG_OVERLAPPED socket with an OVERLAPPED and an
 *                  event: a refusal must fail at once (not WSA_IO_PENDING)
 *     WSASendMsg   the pointer WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) hands out
 * Prints RESULT ok SENT REPLYBYTES (REPLYBYTES -1: no answer) or RESULT fail ERROR
 * WHERE (client.h). Takes HOST PORT MARKER [GOFILE]. */
#include "client.h"

/* A DNS query for name: id 0x1234, RD, one question IN A. */
static int dns_query(char *buf, size_t len, const char *name)
{
    static const char head[12] = {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
    size_t n = sizeof head;
    const char *p = name;

    if (strlen(name) + sizeof head + 6 > len)
        return -1;
    memcpy(buf, head, sizeof head);
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t label = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (label == 0 || label > 63)
            return -1;
        buf[n++] = (char)label;
        memcpy(buf + n, p, label);
        n += label;
        p += label;
        if (*p == '.')
            p++;
    }
    buf[n++] = 0;
    buf[n++] = 0;
    buf[n++] = 1;  /* A */
    buf[n++] = 0;
    buf[n++] = 1;  /* IN */
    return (int)n;
}

static int send_overlapped(SOCKET s, WSABUF *wb, struct sockaddr_in *to, DWORD *sent)
{
    WSAOVERLAPPED ov;
    DWORD flags = 0;
    int err;

    memset(&ov, 0, sizeof ov);
    ov.hEvent = WSACreateEvent();
    if (WSASendTo(s, wb, 1, sent, 0, (struct sockaddr *)to, sizeof *to, &ov, NULL) == 0)
        return 0;
    err = WSAGetLastError();
    if (err != WSA_IO_PENDING)
        return err;
    /* pending: a refusal posted as a completion would be wrong; say so */
    if (WSAWaitForMultipleEvents(1, &ov.hEvent, TRUE, 10000, FALSE) != WSA_WAIT_EVENT_0)
        return WSAETIMEDOUT;
    if (!WSAGetOverlappedResult(s, &ov, sent, FALSE, &flags)) {
        printf("PENDING then error %d\n", WSAGetLastError());
        return WSAGetLastError();
    }
    printf("PENDING then ok\n");
    return 0;
}

static int send_msg(SOCKET s, WSABUF *wb, struct sockaddr_in *to, DWORD *sent)
{
    GUID id = WSAID_WSASENDMSG;
    LPFN_WSASENDMSG fn = NULL;
    DWORD got = 0;
    WSAMSG msg;

    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &fn, sizeof fn,
                 &got, NULL, NULL) != 0 || fn == NULL)
        return -1;
    memset(&msg, 0, sizeof msg);
    msg.name = (struct sockaddr *)to;
    msg.namelen = sizeof *to;
    msg.lpBuffers = wb;
    msg.dwBufferCount = 1;
    return fn(s, &msg, 0, sent, NULL, NULL) == 0 ? 0 : WSAGetLastError();
}

int main(int argc, char **argv)
{
    const char *how = getenv("UDPSEND");
    struct sockaddr_in to;
    char query[512], reply[512];
    DWORD sent = 0, timeout = 5000;
    WSABUF wb;
    SOCKET s;
    int n, err;

    start(argc, argv, 3);
    if (how == NULL || *how == '\0')
        how = "sendto";
    to = target(argv[1], argv[2]);
    n = dns_query(query, sizeof query, argv[3]);
    if (n < 0)
        return fail(WSAEINVAL, "query");
    s = WSASocketW(AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0,
                   strcmp(how, "overlapped") == 0 ? WSA_FLAG_OVERLAPPED : 0);
    if (s == INVALID_SOCKET)
        return fail(WSAGetLastError(), "socket");
    wb.buf = query;
    wb.len = (ULONG)n;
    if (strcmp(how, "sendto") == 0) {
        int r = sendto(s, query, n, 0, (struct sockaddr *)&to, sizeof to);
        if (r == SOCKET_ERROR)
            return fail(WSAGetLastError(), "sendto");
        sent = (DWORD)r;
    } else if (strcmp(how, "WSASendTo") == 0) {
        if (WSASendTo(s, &wb, 1, &sent, 0, (struct sockaddr *)&to, sizeof to, NULL,
                      NULL) != 0)
            return fail(WSAGetLastError(), "WSASendTo");
    } else if (strcmp(how, "overlapped") == 0) {
        if ((err = send_overlapped(s, &wb, &to, &sent)) != 0)
            return fail(err, "WSASendTo-overlapped");
    } else if (strcmp(how, "WSASendMsg") == 0) {
        if ((err = send_msg(s, &wb, &to, &sent)) != 0)
            return fail(err, "WSASendMsg");
    } else {
        fprintf(stderr, "unknown UDPSEND %s\n", how);
        return 64;
    }
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, (const char *)&timeout, sizeof timeout);
    n = recv(s, reply, sizeof reply, 0);
    printf("RESULT ok %lu %d\n", (unsigned long)sent, n > 0 ? n : -1);
    fflush(stdout);
    closesocket(s);
    return 0;
}
