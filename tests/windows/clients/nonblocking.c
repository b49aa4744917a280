/* A non-blocking connect: NONBLOCK=select (ioctlsocket FIONBIO, then select() for
 * writability) or NONBLOCK=event (WSAEventSelect, then wait for FD_CONNECT). Then back
 * to blocking for the exchange. */
#include "client.h"

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    const char *mode = getenv("NONBLOCK");
    int use_event = mode != NULL && strcmp(mode, "event") == 0;
    u_long on = 1, off = 0;
    WSAEVENT ev = NULL;
    SOCKET s;

    start(argc, argv, 3);
    sin = target(argv[1], argv[2]);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (use_event) {
        ev = WSACreateEvent();
        WSAEventSelect(s, ev, FD_CONNECT);
    } else {
        ioctlsocket(s, FIONBIO, &on);
    }
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0) {
        int err = WSAGetLastError();
        if (err != WSAEWOULDBLOCK)
            return fail(err, "connect");
    }
    if (use_event) {
        WSANETWORKEVENTS ne;
        if (WSAWaitForMultipleEvents(1, &ev, FALSE, 60000, FALSE) != WSA_WAIT_EVENT_0)
            return fail(WSAETIMEDOUT, "wait-FD_CONNECT");
        if (WSAEnumNetworkEvents(s, ev, &ne) != 0)
            return fail(WSAGetLastError(), "WSAEnumNetworkEvents");
        if (!(ne.lNetworkEvents & FD_CONNECT))
            return fail(WSAEINVAL, "no-FD_CONNECT");
        if (ne.iErrorCode[FD_CONNECT_BIT] != 0)
            return fail(ne.iErrorCode[FD_CONNECT_BIT], "FD_CONNECT");
        WSAEventSelect(s, NULL, 0);
    } else {
        fd_set wr, ex;
        struct timeval tv = {60, 0};
        int err = 0, len = sizeof err;
        FD_ZERO(&wr);
        FD_ZERO(&ex);
        FD_SET(s, &wr);
        FD_SET(s, &ex);
        if (select(0, NULL, &wr, &ex, &tv) <= 0)
            return fail(WSAETIMEDOUT, "select");
        getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&err, &len);
        if (FD_ISSET(s, &ex) || err != 0)
            return fail(err != 0 ? err : WSAECONNREFUSED, "select-error");
    }
    ioctlsocket(s, FIONBIO, &off);
    return http_exchange(s, argv[3], 0);
}
