/* A UDP echo client: sends three datagrams (MARKER-0, MARKER-1, MARKER-2) to HOST PORT
 * and waits up to 5 s for each echo, which must come back unchanged from HOST PORT
 * itself. How it sends and receives, by UDPMODE:
 *     sendto       unconnected socket: sendto / recvfrom (default)
 *     WSASendTo    unconnected socket: WSASendTo / WSARecvFrom
 *     WSASendMsg   unconnected socket: WSASendMsg / WSARecvMsg, the pointers
 *                  WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) hands out
 *     connect      connect(), then send / recv; getpeername must name HOST PORT
 *     WSAConnect   WSAConnect(), then WSASend / WSARecv; getpeername as above
 *     thread       sendto / recvfrom, each recvfrom begun in a thread 300 ms before
 *                  the send it waits for (the first one before the socket is carried)
 *     WSARecvEx    connect(), then send / WSARecvEx (mswsock); with UDPRECVLEN=N the
 *                  receive buffer is N bytes: an echo cut to it must come with
 *                  MSG_PARTIAL (and a whole one without), its first N bytes compared
 *     ReadFile     connect(), then WriteFile / ReadFile on the socket handle
 *     ReadFileEx   connect(), then send / ReadFileEx (a completion routine, waited
 *                  for alertably)
 *     WriteFileEx  connect(), then WriteFileEx / recv
 *     TransmitPackets, TransmitFile
 *                  connect(), then the datagram by the extension WSAIoctl hands out
 *                  (TransmitFile: no file, the datagram as its head buffer)
 * UDPCOUNT=N sends N datagrams instead of three (one at a time, each after the last
 * echo) and prints "ECHOES N MS" (the milliseconds they took) before the result.
 * UDPPAUSE=FILE: after the first echo, wait (at most 120 s) until FILE exists.
 * With UDPPEEK=1 each echo is first looked at with MSG_PEEK (recvfrom), which must
 * show the same datagram and source, then read.
 * Prints RESULT ok BYTES SOURCE PEER (SOURCE: the last echo's source as a.b.c.d:port;
 * PEER: getpeername's answer, "-" for an unconnected socket) or RESULT fail ERROR
 * WHERE (client.h). Takes HOST PORT MARKER [GOFILE]. */
#include "client.h"

static LPFN_WSASENDMSG send_msg_fn;
static LPFN_WSARECVMSG recv_msg_fn;
static LPFN_TRANSMITPACKETS transmit_packets_fn;
static LPFN_TRANSMITFILE transmit_file_fn;
static int recv_len;  /* UDPRECVLEN: the receive buffer's size (0: the whole buffer) */

static void *extension(SOCKET s, GUID id)
{
    void *fn = NULL;
    DWORD got = 0;

    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &fn, sizeof fn,
                 &got, NULL, NULL) != 0)
        return NULL;
    return fn;
}

static void addr_text(const struct sockaddr_in *sin, char *buf, size_t len)
{
    char ip[INET_ADDRSTRLEN] = "?";

    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
}

static DWORD ex_err, ex_bytes;
static int ex_done;

static VOID WINAPI ex_complete(DWORD err, DWORD bytes, LPOVERLAPPED ov)
{
    (void)ov;
    ex_err = err;
    ex_bytes = bytes;
    ex_done = 1;
}

/* Wait (alertably, at most 5 s) for ex_complete; 0 or the error. */
static int ex_wait(void)
{
    for (int i = 0; i < 50 && !ex_done; i++)
        SleepEx(100, TRUE);
    return ex_done ? (int)ex_err : WSAETIMEDOUT;
}

/* Send buf to `to` the UDPMODE way; 0 or a WSA error. */
static int send_one(const char *how, SOCKET s, char *buf, int len,
                    struct sockaddr_in *to)
{
    WSABUF wb = {(ULONG)len, buf};
    DWORD sent = 0;

    if (strcmp(how, "sendto") == 0) {
        int r = sendto(s, buf, len, 0, (struct sockaddr *)to, sizeof *to);
        return r == len ? 0 : r == SOCKET_ERROR ? WSAGetLastError() : WSAEMSGSIZE;
    }
    if (strcmp(how, "WSASendTo") == 0)
        return WSASendTo(s, &wb, 1, &sent, 0, (struct sockaddr *)to, sizeof *to, NULL,
                         NULL) == 0 ? (sent == (DWORD)len ? 0 : WSAEMSGSIZE)
                                    : WSAGetLastError();
    if (strcmp(how, "WSASendMsg") == 0) {
        WSAMSG msg;
        memset(&msg, 0, sizeof msg);
        msg.name = (struct sockaddr *)to;
        msg.namelen = sizeof *to;
        msg.lpBuffers = &wb;
        msg.dwBufferCount = 1;
        return send_msg_fn(s, &msg, 0, &sent, NULL, NULL) == 0
                   ? (sent == (DWORD)len ? 0 : WSAEMSGSIZE) : WSAGetLastError();
    }
    if (strcmp(how, "WriteFileEx") == 0) {
        static OVERLAPPED ov;
        memset(&ov, 0, sizeof ov);
        ex_done = 0;
        if (!WriteFileEx((HANDLE)s, buf, (DWORD)len, &ov, ex_complete))
            return (int)GetLastError();
        return ex_wait();
    }
    if (strcmp(how, "connect") == 0 || strcmp(how, "WSARecvEx") == 0
        || strcmp(how, "ReadFileEx") == 0) {
        int r = send(s, buf, len, 0);
        return r == len ? 0 : r == SOCKET_ERROR ? WSAGetLastError() : WSAEMSGSIZE;
    }
    if (strcmp(how, "ReadFile") == 0)
        return WriteFile((HANDLE)s, buf, (DWORD)len, &sent, NULL)
                   ? (sent == (DWORD)len ? 0 : WSAEMSGSIZE) : (int)GetLastError();
    if (strcmp(how, "TransmitPackets") == 0) {
        TRANSMIT_PACKETS_ELEMENT e;
        memset(&e, 0, sizeof e);
        e.dwElFlags = TP_ELEMENT_MEMORY;
        e.cLength = (ULONG)len;
        e.pBuffer = buf;
        return transmit_packets_fn(s, &e, 1, 0, NULL, 0) ? 0 : WSAGetLastError();
    }
    if (strcmp(how, "TransmitFile") == 0) {
        TRANSMIT_FILE_BUFFERS tb;
        memset(&tb, 0, sizeof tb);
        tb.Head = buf;
        tb.HeadLength = (DWORD)len;
        return transmit_file_fn(s, NULL, 0, 0, NULL, &tb, 0) ? 0 : WSAGetLastError();
    }
    return WSASend(s, &wb, 1, &sent, 0, NULL, NULL) == 0
               ? (sent == (DWORD)len ? 0 : WSAEMSGSIZE) : WSAGetLastError();
}

/* Receive one datagram into buf the UDPMODE way; its length, or -(WSA error). *from
 * is its source (connected modes: getpeername's, as the program would assume). */
static int recv_one(const char *how, SOCKET s, char *buf, int len,
                    struct sockaddr_in *from, int flags)
{
    int fromlen = sizeof *from;
    WSABUF wb = {(ULONG)len, buf};
    DWORD got = 0, fl = (DWORD)flags;
    int r;

    memset(from, 0, sizeof *from);
    if (strcmp(how, "sendto") == 0 || flags != 0) {
        r = recvfrom(s, buf, len, flags, (struct sockaddr *)from, &fromlen);
        return r == SOCKET_ERROR ? -WSAGetLastError() : r;
    }
    if (strcmp(how, "WSASendTo") == 0) {
        if (WSARecvFrom(s, &wb, 1, &got, &fl, (struct sockaddr *)from, &fromlen, NULL,
                        NULL) != 0)
            return -WSAGetLastError();
        return (int)got;
    }
    if (strcmp(how, "WSASendMsg") == 0) {
        WSAMSG msg;
        memset(&msg, 0, sizeof msg);
        msg.name = (struct sockaddr *)from;
        msg.namelen = sizeof *from;
        msg.lpBuffers = &wb;
        msg.dwBufferCount = 1;
        if (recv_msg_fn(s, &msg, &got, NULL, NULL) != 0)
            return -WSAGetLastError();
        if (msg.namelen != sizeof *from)
            return -WSAEFAULT;
        return (int)got;
    }
    if (recv_len > 0 && recv_len < len)
        len = recv_len;
    if (strcmp(how, "WSARecvEx") == 0) {
        int xflags = 0;
        r = WSARecvEx(s, buf, len, &xflags);
        if (r != SOCKET_ERROR)
            printf("WSARecvEx %d flags %d\n", r, xflags);
        if (r != SOCKET_ERROR && (r == len) != ((xflags & MSG_PARTIAL) != 0))
            return -WSAEMSGSIZE;  /* MSG_PARTIAL wrong */
    } else if (strcmp(how, "ReadFileEx") == 0) {
        static OVERLAPPED ov;
        int e;
        memset(&ov, 0, sizeof ov);
        ex_done = 0;
        if (!ReadFileEx((HANDLE)s, buf, (DWORD)len, &ov, ex_complete))
            return -(int)GetLastError();
        if ((e = ex_wait()) != 0)
            return -e;
        r = (int)ex_bytes;
    } else if (strcmp(how, "ReadFile") == 0) {
        r = ReadFile((HANDLE)s, buf, (DWORD)len, &got, NULL) ? (int)got : SOCKET_ERROR;
        if (r == SOCKET_ERROR)
            return -(int)GetLastError();
    } else if (strcmp(how, "connect") == 0 || strcmp(how, "TransmitPackets") == 0
               || strcmp(how, "TransmitFile") == 0 || strcmp(how, "WriteFileEx") == 0)
        r = recv(s, buf, len, 0);
    else
        r = WSARecv(s, &wb, 1, &got, &fl, NULL, NULL) == 0 ? (int)got : SOCKET_ERROR;
    if (r == SOCKET_ERROR)
        return -WSAGetLastError();
    getpeername(s, (struct sockaddr *)from, &fromlen);
    return r;
}

struct waiter {
    SOCKET s;
    char buf[512];
    struct sockaddr_in from;
    int n;
};

static DWORD WINAPI wait_echo(void *arg)
{
    struct waiter *w = arg;

    w->n = recv_one("sendto", w->s, w->buf, sizeof w->buf, &w->from, 0);
    return 0;
}

int main(int argc, char **argv)
{
    const char *how = getenv("UDPMODE"), *peek = getenv("UDPPEEK");
    const char *count_env = getenv("UDPCOUNT"), *pause = getenv("UDPPAUSE");
    int count = count_env != NULL && atoi(count_env) > 0 ? atoi(count_env) : 3;
    ULONGLONG started;
    struct sockaddr_in to, from, peer;
    char out[256], in[512], src[64] = "-", peer_text[64] = "-";
    DWORD timeout = 5000;
    int connected, err, n, total = 0;
    SOCKET s;

    start(argc, argv, 3);
    if (how == NULL || *how == '\0')
        how = "sendto";
    connected = strcmp(how, "sendto") != 0 && strcmp(how, "WSASendTo") != 0
                && strcmp(how, "WSASendMsg") != 0 && strcmp(how, "thread") != 0;
    recv_len = getenv("UDPRECVLEN") != NULL ? atoi(getenv("UDPRECVLEN")) : 0;
    to = target(argv[1], argv[2]);
    /* socket(), not WSASocketW(..., 0): Wine 8 ignores SO_RCVTIMEO on a socket made
     * without WSA_FLAG_OVERLAPPED (a receive that gets nothing would wait forever) */
    s = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    if (s == INVALID_SOCKET)
        return fail(WSAGetLastError(), "socket");
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, (const char *)&timeout, sizeof timeout);
    if (strcmp(how, "WSASendMsg") == 0) {
        GUID sid = WSAID_WSASENDMSG, rid = WSAID_WSARECVMSG;
        send_msg_fn = (LPFN_WSASENDMSG)extension(s, sid);
        recv_msg_fn = (LPFN_WSARECVMSG)extension(s, rid);
        if (send_msg_fn == NULL || recv_msg_fn == NULL)
            return fail(WSAGetLastError(), "WSAIoctl");
    }
    if (strcmp(how, "TransmitPackets") == 0 || strcmp(how, "TransmitFile") == 0) {
        GUID pid = WSAID_TRANSMITPACKETS, fid = WSAID_TRANSMITFILE;
        transmit_packets_fn = (LPFN_TRANSMITPACKETS)extension(s, pid);
        transmit_file_fn = (LPFN_TRANSMITFILE)extension(s, fid);
        if ((strcmp(how, "TransmitPackets") == 0 ? (void *)transmit_packets_fn
                                                  : (void *)transmit_file_fn) == NULL)
            return fail(WSAGetLastError(), "WSAIoctl");
    }
    if (connected && strcmp(how, "WSAConnect") != 0
        && connect(s, (struct sockaddr *)&to, sizeof to) == SOCKET_ERROR)
        return fail(WSAGetLastError(), "connect");
    if (strcmp(how, "WSAConnect") == 0
        && WSAConnect(s, (struct sockaddr *)&to, sizeof to, NULL, NULL, NULL, NULL)
               == SOCKET_ERROR)
        return fail(WSAGetLastError(), "WSAConnect");
    if (connected) {
        int len = sizeof peer;
        if (getpeername(s, (struct sockaddr *)&peer, &len) == SOCKET_ERROR)
            return fail(WSAGetLastError(), "getpeername");
        addr_text(&peer, peer_text, sizeof peer_text);
    }
    started = GetTickCount64();
    for (int i = 0; i < count; i++) {
        int len = snprintf(out, sizeof out, "%s-%d", argv[3], i);
        for (int w = 0; i == 1 && pause != NULL && w < 1200
                        && GetFileAttributesA(pause) == INVALID_FILE_ATTRIBUTES; w++)
            Sleep(100);
        if (strcmp(how, "thread") == 0) {
            static struct waiter w;
            HANDLE t;
            w.s = s;
            t = CreateThread(NULL, 0, wait_echo, &w, 0, NULL);
            Sleep(300);
            if ((err = send_one("sendto", s, out, len, &to)) != 0)
                return fail(err, "send");
            WaitForSingleObject(t, INFINITE);
            CloseHandle(t);
            if (w.n < 0)
                return fail(-w.n, "recv");
            memcpy(in, w.buf, sizeof in);
            from = w.from;
            n = w.n;
        } else {
            if ((err = send_one(how, s, out, len, &to)) != 0)
                return fail(err, "send");
            if (peek != NULL && strcmp(peek, "1") == 0) {
                n = recv_one(how, s, in, sizeof in, &from, MSG_PEEK);
                if (n < 0)
                    return fail(-n, "peek");
                if (n != len || memcmp(in, out, (size_t)len) != 0
                    || from.sin_addr.s_addr != to.sin_addr.s_addr
                    || from.sin_port != to.sin_port)
                    return fail(0, "peek-mismatch");
            }
            n = recv_one(how, s, in, sizeof in, &from, 0);
            if (n < 0)
                return fail(-n, "recv");
        }
        if (recv_len > 0 && recv_len < len && n == recv_len)
            len = recv_len;  /* cut to the buffer: its first bytes must match */
        if (n != len || memcmp(in, out, (size_t)len) != 0) {
            printf("got %d bytes: %.*s\n", n, n > 0 && n < 200 ? n : 0, in);
            return fail(0, "mismatch");
        }
        addr_text(&from, src, sizeof src);
        if (from.sin_addr.s_addr != to.sin_addr.s_addr || from.sin_port != to.sin_port) {
            printf("echo from %s\n", src);
            return fail(0, "source");
        }
        total += n;
    }
    if (count_env != NULL)
        printf("ECHOES %d %llu\n", count, (unsigned long long)(GetTickCount64() - started));
    printf("RESULT ok %d %s %s\n", total, src, peer_text);
    fflush(stdout);
    closesocket(s);
    return 0;
}
