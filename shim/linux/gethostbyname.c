/* The gethostbyname() family of hooks: gethostbyname(), gethostbyname2() and their _r
 * variants. As getaddrinfo.c: a name that is not numeric or localhost is the daemon's to
 * decide (RESOLVE, docs/wire.md). DIRECT: the real function with the app's arguments.
 * PEER: a hostent with the daemon's stand-in address (in thread-local storage for the
 * non-_r functions, in the caller's buffer for the _r ones). FAIL: HOST_NOT_FOUND. No
 * answer: TRY_AGAIN, never a local query. */
#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

#include "hostent.h"
#include "init.h"
#include "log.h"
#include "name.h"
#include "real.h"
#include "resolve.h"
#include "socksify_wire.h"

/* The non-_r functions' result, one per thread (as glibc's is one per process). */
static __thread struct hostent tls_host;
static __thread char tls_buf[HOSTENT_BUF_SIZE(SOCKSIFY_MAX_NAME)];

/* The hooks' logic. 1: call the real function. 0: ret holds the stand-in address.
 * -errno with *herr set: -ENOENT (HOST_NOT_FOUND), -EAGAIN (TRY_AGAIN), -ERANGE or
 * -EAFNOSUPPORT (NETDB_INTERNAL). */
static int lookup(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                  int *herr)
{
    struct socksify_peer peer;
    unsigned family;
    int r;

    if (name == NULL)
        return 1;  /* the real function's answer to no name */
    if (af == AF_INET) {
        family = SOCKSIFY_FAMILY_INET;
    } else if (af == AF_INET6) {
        family = SOCKSIFY_FAMILY_INET6;
    } else if (socksify_name_is_local(name)) {
        return 1;
    } else {
        *herr = NETDB_INTERNAL;  /* no lookup for a family the daemon cannot answer */
        return -EAFNOSUPPORT;
    }
    r = socksify_resolve_name(name, family, &peer);
    if (r == SOCKSIFY_NAME_REAL)
        return 1;
    if (r == -ENOENT || (r == SOCKSIFY_NAME_PEER && peer.family != family)) {
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

/* The non-_r functions' value, and h_errno (and errno for NETDB_INTERNAL), for the
 * logic's answer r (not 1). */
static struct hostent *tls_result(int r, int herr)
{
    if (r == 0)
        return &tls_host;
    h_errno = herr;
    if (herr == NETDB_INTERNAL)
        errno = -r;
    return NULL;
}

SOCKSIFY_EXPORT struct hostent *gethostbyname2(const char *name, int af)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(name, af, &tls_host, tls_buf, sizeof tls_buf, &herr);
    if (r == 1)
        return socksify_real.gethostbyname2(name, af);
    errno = saved_errno;
    return tls_result(r, herr);
}

SOCKSIFY_EXPORT struct hostent *gethostbyname(const char *name)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(name, AF_INET, &tls_host, tls_buf, sizeof tls_buf, &herr);
    if (r == 1)
        return socksify_real.gethostbyname(name);
    errno = saved_errno;
    return tls_result(r, herr);
}

SOCKSIFY_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret,
                                     char *buf, size_t buflen, struct hostent **result,
                                     int *h_errnop)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(name, af, ret, buf, buflen, &herr);
    if (r == 1)
        return socksify_real.gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
    errno = saved_errno;
    return socksify_hostent_r_result(r, herr, ret, result, h_errnop);
}

SOCKSIFY_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf,
                                    size_t buflen, struct hostent **result, int *h_errnop)
{
    int saved_errno = errno, herr = 0, r;

    socksify_init();
    r = lookup(name, AF_INET, ret, buf, buflen, &herr);
    if (r == 1)
        return socksify_real.gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
    errno = saved_errno;
    return socksify_hostent_r_result(r, herr, ret, result, h_errnop);
}
