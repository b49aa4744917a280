/* getaddrinfo, GetAddrInfoW, GetAddrInfoExW, GetAddrInfoExA: names go to the daemon
 * (RESOLVE). A
 * stand-in address is returned by the real function itself, asked for the numeric
 * address (AI_NUMERICHOST), so the result is freed by the program's own freeaddrinfo
 * as usual. Numeric addresses and localhost are not asked about. */
#include <string.h>

#include "name.h"
#include "shim.h"

extern void *real_GetAddrInfoExW, *real_GetAddrInfoExA;

/* 1: use the real function with the program's name; 0: use the numeric text; <0: fail
 * with that WSA error. */
static int decide(const char *name, int af, char *numeric, size_t len)
{
    struct socksify_peer peer;
    int r;

    if (name == NULL || socksify_name_is_local(name))
        return 1;
    r = socksify_resolve(name, af, &peer);
    if (r == 0)
        socksify_peer_text(&peer, numeric, len);
    return r;
}

INT WSAAPI socksify_hook_getaddrinfo(PCSTR node, PCSTR service, const ADDRINFOA *hints,
                                     PADDRINFOA *res)
{
    char numeric[INET6_ADDRSTRLEN];
    ADDRINFOA h;
    int r = decide(node, hints != NULL ? hints->ai_family : AF_UNSPEC, numeric,
                   sizeof numeric);

    if (r == 1)
        return real_getaddrinfo(node, service, hints, res);
    if (r < 0) {
        WSASetLastError(-r);
        return -r;
    }
    memset(&h, 0, sizeof h);
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real_getaddrinfo(numeric, service, &h, res);
}

/* A wide name's decision; name_out gets the wide numeric text when 0. */
static int decide_w(PCWSTR node, int af, wchar_t *name_out, size_t len)
{
    char ascii[SOCKSIFY_MAX_NAME + 1], numeric[INET6_ADDRSTRLEN];
    int r;

    if (node == NULL)
        return 1;
    if (socksify_name_ascii(node, ascii, sizeof ascii) < 0) {
        if (node[0] == L'\0')
            return 1;
        LOG_WARN("lookup of a non-ASCII name refused (the daemon takes ASCII names)");
        return -WSAHOST_NOT_FOUND;
    }
    r = decide(ascii, af, numeric, sizeof numeric);
    if (r == 0)
        MultiByteToWideChar(CP_ACP, 0, numeric, -1, name_out, (int)len);
    return r;
}

INT WSAAPI socksify_hook_GetAddrInfoW(PCWSTR node, PCWSTR service, const ADDRINFOW *hints,
                                      PADDRINFOW *res)
{
    wchar_t numeric[INET6_ADDRSTRLEN];
    ADDRINFOW h;
    int r = decide_w(node, hints != NULL ? hints->ai_family : AF_UNSPEC, numeric,
                     INET6_ADDRSTRLEN);

    if (r == 1)
        return real_GetAddrInfoW(node, service, hints, res);
    if (r < 0) {
        WSASetLastError(-r);
        return -r;
    }
    memset(&h, 0, sizeof h);
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real_GetAddrInfoW(numeric, service, &h, res);
}

typedef INT (WSAAPI *getaddrinfoexw_fn)(PCWSTR, PCWSTR, DWORD, LPGUID, const ADDRINFOEXW *,
                                        PADDRINFOEXW *, struct timeval *, LPOVERLAPPED,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE, LPHANDLE);

INT WSAAPI socksify_hook_GetAddrInfoExW(PCWSTR node, PCWSTR service, DWORD ns, LPGUID id,
                                        const ADDRINFOEXW *hints, PADDRINFOEXW *res,
                                        struct timeval *timeout, LPOVERLAPPED ov,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE done,
                                        LPHANDLE handle)
{
    getaddrinfoexw_fn real = (getaddrinfoexw_fn)real_GetAddrInfoExW;
    wchar_t numeric[INET6_ADDRSTRLEN];
    ADDRINFOEXW h;
    int r;

    if (ns != NS_ALL && ns != NS_DNS)  /* other name spaces are not host lookups */
        return real(node, service, ns, id, hints, res, timeout, ov, done, handle);
    r = decide_w(node, hints != NULL ? hints->ai_family : AF_UNSPEC, numeric,
                 INET6_ADDRSTRLEN);
    if (r == 1)
        return real(node, service, ns, id, hints, res, timeout, ov, done, handle);
    if (r < 0) {
        WSASetLastError(-r);
        return -r;
    }
    memset(&h, 0, sizeof h);
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real(numeric, service, ns, id, &h, res, timeout, ov, done, handle);
}

typedef INT (WSAAPI *getaddrinfoexa_fn)(PCSTR, PCSTR, DWORD, LPGUID, const ADDRINFOEXA *,
                                        PADDRINFOEXA *, struct timeval *, LPOVERLAPPED,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE, LPHANDLE);

/* As GetAddrInfoExW, with the name as getaddrinfo takes it. Not in Wine 8's ws2_32
 * (then not hooked: socksify_hooks_resolve finds no real function). */
INT WSAAPI socksify_hook_GetAddrInfoExA(PCSTR node, PCSTR service, DWORD ns, LPGUID id,
                                        const ADDRINFOEXA *hints, PADDRINFOEXA *res,
                                        struct timeval *timeout, LPOVERLAPPED ov,
                                        LPLOOKUPSERVICE_COMPLETION_ROUTINE done,
                                        LPHANDLE handle)
{
    getaddrinfoexa_fn real = (getaddrinfoexa_fn)real_GetAddrInfoExA;
    char numeric[INET6_ADDRSTRLEN];
    ADDRINFOEXA h;
    int r;

    if (ns != NS_ALL && ns != NS_DNS)  /* other name spaces are not host lookups */
        return real(node, service, ns, id, hints, res, timeout, ov, done, handle);
    r = decide(node, hints != NULL ? hints->ai_family : AF_UNSPEC, numeric,
               sizeof numeric);
    if (r == 1)
        return real(node, service, ns, id, hints, res, timeout, ov, done, handle);
    if (r < 0) {
        WSASetLastError(-r);
        return -r;
    }
    memset(&h, 0, sizeof h);
    if (hints != NULL)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    return real(numeric, service, ns, id, &h, res, timeout, ov, done, handle);
}
