/* Many direct sends or connects, timed, then one more after the test says go: for the
 * DLL's cache of DIRECT answers (docs/wire.md "Caching"). Takes HOST PORT N MODE
 * READYFILE GOFILE, MODE udp (N sendto of one byte on one unconnected socket) or tcp
 * (N sockets, each connected and closed). Prints
 *     BATCH N FIRST REST            the N calls succeeded: microseconds for the
 *                                   first, and for the other N-1 together
 * then creates READYFILE, waits (at most 120 s) until GOFILE exists, makes one more
 * call and prints RESULT ok 1 after or RESULT fail ERROR after (client.h). */
#include "client.h"

static int one(const char *mode, SOCKET u, const struct sockaddr_in *to)
{
    SOCKET s;
    int err = 0;

    if (strcmp(mode, "udp") == 0)
        return sendto(u, "x", 1, 0, (const struct sockaddr *)to, sizeof *to) == 1
                   ? 0 : WSAGetLastError();
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return WSAGetLastError();
    if (connect(s, (const struct sockaddr *)to, sizeof *to) != 0)
        err = WSAGetLastError();
    closesocket(s);
    return err;
}

int main(int argc, char **argv)
{
    LARGE_INTEGER freq, t0, t1, t2;
    struct sockaddr_in to;
    SOCKET u;
    HANDLE ready;
    int n, i, err;

    start(argc, argv, 6);
    to = target(argv[1], argv[2]);
    n = atoi(argv[3]);
    u = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    if (u == INVALID_SOCKET)
        return fail(WSAGetLastError(), "socket");
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t0);
    for (i = 0; i < n; i++) {
        if ((err = one(argv[4], u, &to)) != 0)
            return fail(err, "batch");
        if (i == 0)
            QueryPerformanceCounter(&t1);
    }
    QueryPerformanceCounter(&t2);
    printf("BATCH %d %lld %lld\n", n,
           (long long)((t1.QuadPart - t0.QuadPart) * 1000000 / freq.QuadPart),
           (long long)((t2.QuadPart - t1.QuadPart) * 1000000 / freq.QuadPart));
    fflush(stdout);
    ready = CreateFileA(argv[5], GENERIC_WRITE, 0, NULL, CREATE_NEW, 0, NULL);
    if (ready == INVALID_HANDLE_VALUE)
        return fail((int)GetLastError(), "readyfile");
    CloseHandle(ready);
    for (i = 0; i < 1200 && GetFileAttributesA(argv[6]) == INVALID_FILE_ATTRIBUTES; i++)
        Sleep(100);
    if ((err = one(argv[4], u, &to)) != 0)
        return fail(err, "after");
    printf("RESULT ok 1 after\n");
    fflush(stdout);
    return 0;
}
