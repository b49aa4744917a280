/* Shared by the Windows test clients (built with mingw, run under Wine by
 * tests/windows). Each client takes HOST PORT MARKER [GOFILE]: it waits until GOFILE
 * exists (if given), connects its own way, sends "GET /small.bin?m=MARKER HTTP/1.0",
 * reads the reply to EOF and prints one line:
 *     RESULT ok BYTES STATUSLINE        exit 0
 *     RESULT fail ERROR WHERE           exit 2  (ERROR: the WSA/Win32 error number)
 */
#ifndef SOCKSIFY_TEST_CLIENT_H
#define SOCKSIFY_TEST_CLIENT_H

#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(int err, const char *where)
{
    printf("RESULT fail %d %s\n", err, where);
    fflush(stdout);
    return 2;
}

static void start(int argc, char **argv, int nargs)
{
    WSADATA wsa;

    if (argc < nargs + 1) {
        fprintf(stderr, "usage: %s HOST PORT MARKER [GOFILE]\n", argv[0]);
        exit(64);
    }
    if (argc > nargs + 1) {  /* wait (at most 120 s) for the test to say go */
        for (int i = 0; i < 1200 && GetFileAttributesA(argv[nargs + 1])
                                         == INVALID_FILE_ATTRIBUTES; i++)
            Sleep(100);
    }
    WSAStartup(MAKEWORD(2, 2), &wsa);
}

static void make_request(char *buf, size_t len, const char *marker)
{
    snprintf(buf, len, "GET /small.bin?m=%s HTTP/1.0\r\nHost: far\r\n\r\n", marker);
}

static struct sockaddr_in target(const char *host, const char *port)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((u_short)atoi(port));
    inet_pton(AF_INET, host, &sin.sin_addr);
    return sin;
}

/* Send the request and read the reply on a connected blocking socket. */
static int http_exchange(SOCKET s, const char *marker, int already_sent)
{
    char req[256], buf[65536], status[64] = "";
    long total = 0;
    int n;

    make_request(req, sizeof req, marker);
    if (!already_sent && send(s, req, (int)strlen(req), 0) != (int)strlen(req))
        return fail(WSAGetLastError(), "send");
    while ((n = recv(s, buf, sizeof buf, 0)) > 0) {
        if (total == 0) {
            size_t k = 0;
            while (k < sizeof status - 1 && k < (size_t)n && buf[k] != '\r') {
                status[k] = buf[k] == ' ' ? '_' : buf[k];
                k++;
            }
            status[k] = '\0';
        }
        total += n;
    }
    if (n < 0)
        return fail(WSAGetLastError(), "recv");
    printf("RESULT ok %ld %s\n", total, status);
    fflush(stdout);
    closesocket(s);
    return 0;
}

#endif
