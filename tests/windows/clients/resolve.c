/* Looks a host name up (RESOLVE=getaddrinfo, the default; GetAddrInfoW; gethostbyname)
 * and connects to the first IPv4 address. Arguments: NAME PORT MARKER [GOFILE]. */
#include "client.h"

int main(int argc, char **argv)
{
    const char *how = getenv("RESOLVE");
    struct sockaddr_in sin;
    SOCKET s;
    int r;

    start(argc, argv, 3);
    memset(&sin, 0, sizeof sin);
    if (how != NULL && strcmp(how, "gethostbyname") == 0) {
        struct hostent *h = gethostbyname(argv[1]);
        if (h == NULL)
            return fail(WSAGetLastError(), "gethostbyname");
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, h->h_addr_list[0], 4);
    } else if (how != NULL && strcmp(how, "GetAddrInfoW") == 0) {
        wchar_t name[256];
        ADDRINFOW hints, *res = NULL;
        MultiByteToWideChar(CP_ACP, 0, argv[1], -1, name, 256);
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if ((r = GetAddrInfoW(name, NULL, &hints, &res)) != 0)
            return fail(r, "GetAddrInfoW");
        memcpy(&sin, res->ai_addr, sizeof sin);
        FreeAddrInfoW(res);
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if ((r = getaddrinfo(argv[1], NULL, &hints, &res)) != 0)
            return fail(r, "getaddrinfo");
        memcpy(&sin, res->ai_addr, sizeof sin);
        freeaddrinfo(res);
    }
    sin.sin_port = htons((u_short)atoi(argv[2]));
    {
        char text[64];
        inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
        printf("ADDRESS %s\n", text);
    }
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0)
        return fail(WSAGetLastError(), "connect");
    return http_exchange(s, argv[3], 0);
}
