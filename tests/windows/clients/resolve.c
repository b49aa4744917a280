/* Looks a host name up (RESOLVE=getaddrinfo, the default; GetAddrInfoW;
 * GetAddrInfoExW; GetAddrInfoExA; gethostbyname) and connects to the first IPv4
 * address. Arguments: NAME PORT MARKER [GOFILE]. GetAddrInfoExA is looked up with
 * GetProcAddress (Wine 8's ws2_32 lacks it): when absent the client prints
 *     SKIP ws2_32 has no GetAddrInfoExA
 * and exits 3. */
#include "client.h"

typedef INT (WSAAPI *getaddrinfoexa_fn)(PCSTR, PCSTR, DWORD, LPGUID, const ADDRINFOEXA *,
                                        PADDRINFOEXA *, struct timeval *, LPOVERLAPPED,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE, LPHANDLE);
typedef void (WSAAPI *freeaddrinfoexa_fn)(PADDRINFOEXA);

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
    } else if (how != NULL && strcmp(how, "GetAddrInfoExW") == 0) {
        wchar_t name[256];
        ADDRINFOEXW hints, *res = NULL;
        MultiByteToWideChar(CP_ACP, 0, argv[1], -1, name, 256);
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if ((r = GetAddrInfoExW(name, NULL, NS_ALL, NULL, &hints, &res, NULL, NULL, NULL,
                                NULL)) != 0)
            return fail(r, "GetAddrInfoExW");
        memcpy(&sin, res->ai_addr, sizeof sin);
        FreeAddrInfoExW(res);
    } else if (how != NULL && strcmp(how, "GetAddrInfoExA") == 0) {
        HMODULE ws2 = GetModuleHandleA("ws2_32.dll");
        getaddrinfoexa_fn lookup = (getaddrinfoexa_fn)(void *)GetProcAddress(
            ws2, "GetAddrInfoExA");
        freeaddrinfoexa_fn release = (freeaddrinfoexa_fn)(void *)GetProcAddress(
            ws2, "FreeAddrInfoEx");
        ADDRINFOEXA hints, *res = NULL;
        if (lookup == NULL || release == NULL) {
            printf("SKIP ws2_32 has no %s\n",
                   lookup == NULL ? "GetAddrInfoExA" : "FreeAddrInfoEx");
            fflush(stdout);
            return 3;
        }
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        if ((r = lookup(argv[1], NULL, NS_ALL, NULL, &hints, &res, NULL, NULL, NULL,
                        NULL)) != 0)
            return fail(r, "GetAddrInfoExA");
        memcpy(&sin, res->ai_addr, sizeof sin);
        release(res);
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
