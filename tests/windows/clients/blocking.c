/* A blocking connect(). After connecting it prints what getpeername() reports:
 *     PEER a.b.c.d:PORT        (or PEER error ERROR)
 * With LOCALPEER=1 it first connects a second socket to a listener of its own on
 * loopback (before any relayed connection, so the DLL must ask the daemon) and prints
 *     LOCALPEER REPORTED EXPECTED
 */
#include "client.h"

/* What getpeername() reports for s: "a.b.c.d:PORT", or "error ERROR". */
static void peer_text(SOCKET s, char *buf, size_t len)
{
    struct sockaddr_in peer;
    int plen = sizeof peer;
    char text[64];

    memset(&peer, 0, sizeof peer);
    if (getpeername(s, (struct sockaddr *)&peer, &plen) != 0) {
        snprintf(buf, len, "error %d", WSAGetLastError());
    } else {
        inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
        snprintf(buf, len, "%s:%u", text, (unsigned)ntohs(peer.sin_port));
    }
}

/* A socket connected to a listener on 127.0.0.1: its peer is that listener. */
static void local_peer(void)
{
    struct sockaddr_in sin;
    int len = sizeof sin;
    SOCKET l = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP), c, a;
    char text[80];

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(l, 1) != 0
        || getsockname(l, (struct sockaddr *)&sin, &len) != 0) {
        printf("LOCALPEER error %d\n", WSAGetLastError());
        return;
    }
    c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(c, (struct sockaddr *)&sin, sizeof sin) != 0) {
        printf("LOCALPEER error %d\n", WSAGetLastError());
        return;
    }
    a = accept(l, NULL, NULL);
    peer_text(c, text, sizeof text);
    printf("LOCALPEER %s 127.0.0.1:%u\n", text, (unsigned)ntohs(sin.sin_port));
    closesocket(a);
    closesocket(c);
    closesocket(l);
}

int main(int argc, char **argv)
{
    const char *local = getenv("LOCALPEER");
    struct sockaddr_in sin;
    char text[80];
    SOCKET s;

    start(argc, argv, 3);
    if (local != NULL && strcmp(local, "1") == 0)
        local_peer();
    sin = target(argv[1], argv[2]);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0)
        return fail(WSAGetLastError(), "connect");
    peer_text(s, text, sizeof text);
    printf("PEER %s\n", text);
    fflush(stdout);
    return http_exchange(s, argv[3], 0);
}
