/* The getnameinfo() hook: the host part of an IPv4/IPv6 address that is not loopback
 * is the daemon's to decide (NAMEOF, docs/wire.md), since a PTR query names the address
 * to the local resolver. DIRECT: the real getnameinfo() with the app's arguments.
 * NAME: the daemon's name for the address (a stand-in it handed out). FAIL: the
 * numeric form, as with NI_NUMERICHOST, or EAI_NONAME under NI_NAMEREQD. No answer: the
 * numeric form, or EAI_AGAIN under NI_NAMEREQD; never a local query. The service part
 * is always the real getnameinfo()'s. */
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include "init.h"
#include "log.h"
#include "real.h"
#include "resolve.h"
#include "socksify_wire.h"

/* The hook's logic; returns 0 or an EAI_* code. */
static int socksify_getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                                socklen_t hostlen, char *serv, socklen_t servlen,
                                int flags)
{
    char name[SOCKSIFY_MAX_NAME + 1];
    int r, rc;

    if (sa == NULL || host == NULL || hostlen == 0 || (flags & NI_NUMERICHOST))
        return socksify_real.getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    r = socksify_resolve_addr(sa, salen, name, sizeof name);
    if (r == SOCKSIFY_NAME_REAL)
        return socksify_real.getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    if (r < 0 && (flags & NI_NAMEREQD))
        return r == -ENOENT ? EAI_NONAME : EAI_AGAIN;
    /* The numeric host and the service, without a query; glibc refuses NI_NAMEREQD
     * together with NI_NUMERICHOST, so it is not passed on. */
    rc = socksify_real.getnameinfo(sa, salen, host, hostlen, serv, servlen,
                          (flags | NI_NUMERICHOST) & ~NI_NAMEREQD);
    if (rc != 0 || r < 0)
        return rc;
    if ((size_t)r + 1 > hostlen)
        return EAI_OVERFLOW;
    memcpy(host, name, (size_t)r + 1);
    return 0;
}

SOCKSIFY_EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                                socklen_t hostlen, char *serv, socklen_t servlen, int flags)
{
    int saved_errno = errno, r;

    socksify_init();
    r = socksify_getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
    if (r != EAI_SYSTEM)
        errno = saved_errno;
    return r;
}
