/* WSAConnect: as connect(). Caller/callee data and QOS only go to a DIRECT connection
 * (TCP carries neither). Wine's WSAConnect calls connect() inside ws2_32, where the
 * import table does not see it; Windows' does not: both are hooked. */
#include "shim.h"

struct wsaconnect_args {
    SOCKET s;
    const struct sockaddr *addr;
    int len;
    LPWSABUF caller, callee;
    LPQOS sqos, gqos;
};

static int wsaconnect_direct(void *ctx)
{
    struct wsaconnect_args *a = ctx;

    return real_WSAConnect(a->s, a->addr, a->len, a->caller, a->callee, a->sqos, a->gqos);
}

int WSAAPI socksify_hook_WSAConnect(SOCKET s, const struct sockaddr *addr, int len,
                                    LPWSABUF caller, LPWSABUF callee, LPQOS sqos,
                                    LPQOS gqos)
{
    struct wsaconnect_args a = {s, addr, len, caller, callee, sqos, gqos};

    return socksify_connect_run(s, addr, len, wsaconnect_direct, &a);
}
