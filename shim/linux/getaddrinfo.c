/* The getaddrinfo() hook: a host name that is not numeric or localhost is the daemon's
 * to decide (RESOLVE, docs/wire.md). DIRECT: the real getaddrinfo() with the app's
 * arguments. PEER: the daemon's stand-in address as the only address, in a list the
 * real getaddrinfo() builds, so that the app's freeaddrinfo() frees it. FAIL:
 * EAI_NONAME. No answer: EAI_AGAIN, never a local query. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "init.h"
#include "log.h"
#include "real.h"
#include "resolve.h"
#include "socksify_wire.h"

/* The wire family for the app's hints: 4, 6, or 0 for either. */
static unsigned wire_family(const struct addrinfo *hints)
{
    if (hints != NULL && hints->ai_family == AF_INET)
        return SOCKSIFY_FAMILY_INET;
    if (hints != NULL && hints->ai_family == AF_INET6)
        return SOCKSIFY_FAMILY_INET6;
    return SOCKSIFY_FAMILY_ANY;
}

/* The stand-in address as text for a lookup with the app's family and flags (an IPv4
 * one as ::ffff:a.b.c.d for an AF_INET6 lookup with AI_V4MAPPED); -EAI_NONAME when the
 * app's family cannot have it. */
static int peer_text(const struct socksify_peer *peer, int family, int flags, char *buf,
                     size_t len)
{
    static const char mapped[] = "::ffff:";

    if (peer->family == SOCKSIFY_FAMILY_INET6) {
        if (family == AF_INET || inet_ntop(AF_INET6, peer->addr, buf, len) == NULL)
            return EAI_NONAME;
        return 0;
    }
    if (family != AF_INET6)
        return inet_ntop(AF_INET, peer->addr, buf, len) == NULL ? EAI_NONAME : 0;
    if (!(flags & AI_V4MAPPED) || len < sizeof mapped)
        return EAI_NONAME;
    memcpy(buf, mapped, sizeof mapped);
    if (inet_ntop(AF_INET, peer->addr, buf + sizeof mapped - 1, len - (sizeof mapped - 1))
        == NULL)
        return EAI_NONAME;
    return 0;
}

/* The result list for a PEER answer: the real getaddrinfo() on the numeric stand-in
 * address with the app's service and hints (plus AI_NUMERICHOST: no query, and without
 * AI_ADDRCONFIG: the stand-in is never routed, the shim relays it), the first entry's
 * canonical name the app's name when it asked for AI_CANONNAME. */
static int peer_result(const char *node, const char *service, const struct addrinfo *hints,
                       const struct socksify_peer *peer, struct addrinfo **res)
{
    struct addrinfo h;
    char text[INET6_ADDRSTRLEN + 8];
    char *canon;
    int r;

    memset(&h, 0, sizeof h);
    if (hints != NULL) {
        h.ai_flags = hints->ai_flags;
        h.ai_family = hints->ai_family;
        h.ai_socktype = hints->ai_socktype;
        h.ai_protocol = hints->ai_protocol;
    }
    if ((r = peer_text(peer, h.ai_family, h.ai_flags, text, sizeof text)) != 0) {
        LOG_INFO("%s: the stand-in address is not of the family the program asked for",
                 node);
        return r;
    }
    h.ai_flags = (h.ai_flags | AI_NUMERICHOST) & ~AI_ADDRCONFIG;
    if ((r = socksify_real.getaddrinfo(text, service, &h, res)) != 0)
        return r;
    if ((h.ai_flags & AI_CANONNAME) && *res != NULL) {
        if ((canon = strdup(node)) == NULL) {
            freeaddrinfo(*res);
            *res = NULL;
            return EAI_MEMORY;
        }
        free((*res)->ai_canonname);
        (*res)->ai_canonname = canon;
    }
    LOG_DEBUG("%s: answering with the stand-in address %s", node, text);
    return 0;
}

/* The hook's logic; returns 0 or an EAI_* code. */
static int socksify_getaddrinfo(const char *node, const char *service,
                                const struct addrinfo *hints, struct addrinfo **res)
{
    struct socksify_peer peer;
    int r;

    if (node == NULL || (hints != NULL && (hints->ai_flags & AI_NUMERICHOST)))
        return socksify_real.getaddrinfo(node, service, hints, res);  /* no name to look up */
    r = socksify_resolve_name(node, wire_family(hints), &peer);
    switch (r) {
    case SOCKSIFY_NAME_REAL:
        return socksify_real.getaddrinfo(node, service, hints, res);
    case SOCKSIFY_NAME_PEER:
        return peer_result(node, service, hints, &peer, res);
    case -ENOENT:
        return EAI_NONAME;
    default:
        return EAI_AGAIN;
    }
}

SOCKSIFY_EXPORT int getaddrinfo(const char *node, const char *service,
                                const struct addrinfo *hints, struct addrinfo **res)
{
    int saved_errno = errno, r;

    socksify_init();
    r = socksify_getaddrinfo(node, service, hints, res);
    if (r != EAI_SYSTEM)
        errno = saved_errno;
    return r;
}
