/* A blocking WSAConnect(), on a WSASocket. */
#include "client.h"

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    SOCKET s;

    start(argc, argv, 3);
    sin = target(argv[1], argv[2]);
    s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, 0);
    if (WSAConnect(s, (struct sockaddr *)&sin, sizeof sin, NULL, NULL, NULL, NULL) != 0)
        return fail(WSAGetLastError(), "WSAConnect");
    return http_exchange(s, argv[3], 0);
}
