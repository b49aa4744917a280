/* A blocking connect(). */
#include "client.h"

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    SOCKET s;

    start(argc, argv, 3);
    sin = target(argv[1], argv[2]);
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0)
        return fail(WSAGetLastError(), "connect");
    return http_exchange(s, argv[3], 0);
}
