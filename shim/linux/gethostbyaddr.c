/* The gethostbyaddr() hooks: gethostbyaddr() and gethostbyaddr_r(). As getnameinfo.c:
 * an IPv4/IPv6 address that is not loopback is the daemon's to decide (NAMEOF,
 * docs/wire.md). DIRECT: the real function with the app's arguments. NAME: a hostent
 * with the daemon's name and the app's address (in thread-local storage for
 * gethostbyaddr(), in the caller's buffer for gethostbyaddr_r()). FAIL: HOST_NOT_FOUND.
 * No answer: TRY_AGAIN, never a local query. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "hostent.h"
#include "init.h"
#include "log.h"
#include "real.h"
#include "resolve.h"
#include "socksify_wire.h"

/* gethostbyaddr()'s result, one per thread (as glibc's is one per process). */
static __thread struct hostent tls_host;
static __thread char tls_buf[HOSTENT_BUF_SIZE(SOCKSIFY_MAX_NAME)];

/* The hooks' logic. 1: call the real function. 0: ret holds the daemon's name.
 * -errno with *herr set: -ENOENT (HOST_NOT_FOUND), -EAGAIN (TRY_AGAIN), -ERANGE
 * (NETDB_INTERNAL). */
static int lookup(const void *addr, socklen_t len, int type, struct hostent *ret,
                  char *buf, size_t buflen, int *herr)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    struct socksify_peer peer;
    char name[SOCKSIFY_MAX_NAME + 1];
    socklen_t sslen;
    int r;

    /* glibc reads the first 4 or 16 bytes of addr and refuses a shorter len or another
     * type without a query: leave those to it. */
    memset(&ss, 0, sizeof ss);
    memset(&peer, 0, sizeof peer);
    if (addr != NULL && type == AF_INET && len >= 4) {
        in4->sin_family = AF_INET;
        memcpy(&in4->sin_addr, addr, 4);
        sslen = sizeof *in4;
        peer.family = SOCKSIFY_FAMILY_INET;
        memcpy(peer.addr, addr, 4);
    } else if (addr != NULL && type == AF_INET6 && len >= 16) {
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, addr, 16);
        sslen = sizeof *in6;
        peer.family = SOCKSIFY_FAMILY_INET6;  /* a v4-mapped address stays as given */
        memcpy(peer.addr, addr, 16);
    } else {
        return 1;
    }
    r = socksify_resolve_addr((const struct sockaddr *)&ss, sslen, name, sizeof name);
    if (r == SOCKSIFY_NAME_REAL)
        return 1;
    if (r == -ENOENT) {
        *herr = HOST_NOT_FOUND;
        return -ENOENT;
    }
    if (r < 0) {
        *herr = TRY_AGAIN;
        return -EAGAIN;
    }
    if ((r = socksify_fill_hostent(name, &peer, ret, buf, buflen)) < 0) {
        *herr = NETDB_INTERNAL;
        return r;
    }
    return 0;
}

SOCKSIFY_EXPORT struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(addr, len, type, &tls_host, tls_buf, sizeof tls_buf, &herr);
    if (r == 1)
        return socksify_real.gethostbyaddr(addr, len, type);
    errno = saved_errno;
    if (r == 0)
        return &tls_host;
    h_errno = herr;
    if (herr == NETDB_INTERNAL)
        errno = -r;
    return NULL;
}

SOCKSIFY_EXPORT int gethostbyaddr_r(const void *addr, socklen_t len, int type,
                                    struct hostent *ret, char *buf, size_t buflen,
                                    struct hostent **result, int *h_errnop)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(addr, len, type, ret, buf, buflen, &herr);
    if (r == 1)
        return socksify_real.gethostbyaddr_r(addr, len, type, ret, buf, buflen, result, h_errnop);
    errno = saved_errno;
    return socksify_hostent_r_result(r, herr, ret, result, h_errnop);
}
