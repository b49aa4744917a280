/* gethostbyname: as getaddrinfo. The real function is asked for the stand-in's
 * numeric text (its per-thread hostent holds the result), and h_name is set back to
 * the name the program asked for. */
#include <string.h>

#include "name.h"
#include "shim.h"

extern void *real_gethostbyname;

static SOCKSIFY_TLS char host_name[SOCKSIFY_MAX_NAME + 1];

struct hostent *WSAAPI socksify_hook_gethostbyname(const char *name)
{
    struct hostent *(WSAAPI *real)(const char *) =
        (struct hostent *(WSAAPI *)(const char *))real_gethostbyname;
    struct socksify_peer peer;
    struct hostent *h;
    char numeric[INET6_ADDRSTRLEN];
    int r;

    if (name == NULL || name[0] == '\0' || socksify_name_is_local(name))
        return real(name);
    r = socksify_resolve(name, AF_INET, &peer);
    if (r == 1)
        return real(name);
    if (r < 0 || peer.family != SOCKSIFY_FAMILY_INET) {
        WSASetLastError(r < 0 ? -r : WSANO_DATA);
        return NULL;
    }
    socksify_peer_text(&peer, numeric, sizeof numeric);
    h = real(numeric);
    if (h != NULL && strlen(name) < sizeof host_name) {
        strcpy(host_name, name);
        h->h_name = host_name;
    }
    return h;
}
