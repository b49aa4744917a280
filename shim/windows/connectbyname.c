/* WSAConnectByNameW/A: the name is looked up as by getaddrinfo (RESOLVE: a stand-in
 * address, or DIRECT for the real function), then connected as by connect(). The
 * address family asked for is the socket's. */
#include <stdio.h>
#include <string.h>

#include "name.h"
#include "shim.h"

extern void *real_WSAConnectByNameW, *real_WSAConnectByNameA;

/* The port of a service name or number ("http", "80"); 0 if unknown. */
static unsigned short service_port(const char *service)
{
    ADDRINFOA hints, *res = NULL;
    unsigned short port = 0;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_socktype = SOCK_STREAM;
    if (real_getaddrinfo("0.0.0.0", service, &hints, &res) == 0 && res != NULL) {
        port = ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port);
        freeaddrinfo(res);
    }
    return port;
}

struct byname_args {
    int direct_called;
};

static int byname_direct(void *ctx)
{
    ((struct byname_args *)ctx)->direct_called = 1;
    return 0;
}

/* 1: the real function must do it; 0: done (connected, outputs filled); -1: failed
 * (WSASetLastError done). */
static int connect_by_name(SOCKET s, const char *name, const char *service,
                           LPDWORD local_len, LPSOCKADDR local, LPDWORD remote_len,
                           LPSOCKADDR remote)
{
    WSAPROTOCOL_INFOW info;
    struct socksify_peer peer;
    struct sockaddr_storage ss;
    struct byname_args args = {0};
    int optlen = sizeof info, af = AF_INET, len, r;
    unsigned short port;

    if (name == NULL || service == NULL || socksify_name_is_local(name))
        return 1;
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &optlen) == 0)
        af = info.iAddressFamily;
    r = socksify_resolve(name, af, &peer);
    if (r == 1)
        return 1;
    if (r < 0) {
        WSASetLastError(-r);
        return -1;
    }
    if ((port = service_port(service)) == 0) {
        WSASetLastError(WSATYPE_NOT_FOUND);
        return -1;
    }
    memset(&ss, 0, sizeof ss);
    if (af == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        if (peer.family == SOCKSIFY_FAMILY_INET) {  /* v4-mapped */
            in6->sin6_addr.s6_addr[10] = in6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&in6->sin6_addr.s6_addr[12], peer.addr, 4);
        } else {
            memcpy(&in6->sin6_addr, peer.addr, 16);
        }
        len = sizeof *in6;
    } else if (peer.family == SOCKSIFY_FAMILY_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        memcpy(&in4->sin_addr, peer.addr, 4);
        len = sizeof *in4;
    } else {
        WSASetLastError(WSAEAFNOSUPPORT);
        return -1;
    }
    if (socksify_connect_run(s, (struct sockaddr *)&ss, len, byname_direct, &args) != 0)
        return -1;
    if (args.direct_called)
        return 1;
    if (remote != NULL && remote_len != NULL && *remote_len >= (DWORD)len) {
        memcpy(remote, &ss, (size_t)len);
        *remote_len = (DWORD)len;
    }
    if (local != NULL && local_len != NULL) {
        int l = (int)*local_len;
        if (getsockname(s, local, &l) == 0)
            *local_len = (DWORD)l;
    }
    return 0;
}

BOOL WSAAPI socksify_hook_WSAConnectByNameA(SOCKET s, LPCSTR name, LPCSTR service,
                                            LPDWORD local_len, LPSOCKADDR local,
                                            LPDWORD remote_len, LPSOCKADDR remote,
                                            const struct timeval *timeout,
                                            LPWSAOVERLAPPED reserved)
{
    int r = connect_by_name(s, name, service, local_len, local, remote_len, remote);

    if (r == 1)
        return ((BOOL (WSAAPI *)(SOCKET, LPCSTR, LPCSTR, LPDWORD, LPSOCKADDR, LPDWORD,
                                 LPSOCKADDR, const struct timeval *, LPWSAOVERLAPPED))
                real_WSAConnectByNameA)(s, name, service, local_len, local, remote_len,
                                        remote, timeout, reserved);
    return r == 0;
}

BOOL WSAAPI socksify_hook_WSAConnectByNameW(SOCKET s, LPWSTR name, LPWSTR service,
                                            LPDWORD local_len, LPSOCKADDR local,
                                            LPDWORD remote_len, LPSOCKADDR remote,
                                            const struct timeval *timeout,
                                            LPWSAOVERLAPPED reserved)
{
    char n[SOCKSIFY_MAX_NAME + 1], svc[64];
    int r = 1;

    if (name != NULL && service != NULL && socksify_name_ascii(name, n, sizeof n) == 0
        && socksify_name_ascii(service, svc, sizeof svc) == 0)
        r = connect_by_name(s, n, svc, local_len, local, remote_len, remote);
    else if (name != NULL && name[0] != L'\0' && socksify_name_ascii(name, n, sizeof n) < 0) {
        WSASetLastError(WSAHOST_NOT_FOUND);  /* the daemon takes ASCII names only */
        return FALSE;
    }
    if (r == 1)
        return ((BOOL (WSAAPI *)(SOCKET, LPWSTR, LPWSTR, LPDWORD, LPSOCKADDR, LPDWORD,
                                 LPSOCKADDR, const struct timeval *, LPWSAOVERLAPPED))
                real_WSAConnectByNameW)(s, name, service, local_len, local, remote_len,
                                        remote, timeout, reserved);
    return r == 0;
}
