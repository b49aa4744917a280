/* The res_search() hooks: res_search, res_nsearch and their __res_* names. The
 * resolver may query the name as given and the name under each domain of the search
 * list (resolv.conf "search"/"domain"), so each of those must pass the gate
 * (dnsgate.h) before any goes out. A single-label name that HOSTALIASES may rename is
 * refused: the alias file, not the program, would choose the name queried. */
#include <errno.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsgate.h"
#include "init.h"
#include "log.h"
#include "real.h"
#include "socksify_wire.h"

/* 0 when every name the search may query passes the gate; else -1, refusal set. */
static int gate(res_state statp, const char *call, const char *name)
{
    size_t len;

    if (name == NULL)
        return socksify_dns_refuse(statp, EINVAL);
    len = strlen(name);
    if (strchr(name, '.') == NULL && !(statp->options & RES_NOALIASES) &&
        getenv("HOSTALIASES") != NULL) {
        LOG_WARN("%s refused: HOSTALIASES is set and may rename a single-label name",
                 call);
        return socksify_dns_refuse(statp, EACCES);
    }
    if (socksify_dns_gate(statp, call, name) < 0)
        return -1;
    if ((len > 0 && name[len - 1] == '.') || !(statp->options & RES_INIT))
        return 0;  /* absolute: no search list; not initialised: the real call fails */
    for (int i = 0; i < MAXDNSRCH && statp->dnsrch[i] != NULL; i++) {
        char full[SOCKSIFY_MAX_NAME + 2];
        int n = snprintf(full, sizeof full, "%s.%s", name, statp->dnsrch[i]);

        if (n < 0 || (size_t)n >= sizeof full)
            continue;  /* too long for DNS: the resolver skips it too */
        if (socksify_dns_gate(statp, call, full) < 0)
            return -1;
    }
    return 0;
}

static int socksify_res_search(const char *name, int class, int type,
                               unsigned char *answer, int anslen)
{
    __typeof__(socksify_real.res_search) real;

    socksify_init();
    if (!(_res.options & RES_INIT) && res_init() < 0)
        return socksify_dns_refuse(&_res, EINVAL);  /* what res_search() would do */
    if (gate(&_res, "res_search", name) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_search)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(&_res, ENOSYS);
    return real(name, class, type, answer, anslen);
}

static int socksify_res_nsearch(res_state statp, const char *name, int class, int type,
                                unsigned char *answer, int anslen)
{
    __typeof__(socksify_real.res_nsearch) real;

    socksify_init();
    if (statp == NULL)
        return socksify_dns_refuse(NULL, EINVAL);
    if (gate(statp, "res_nsearch", name) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_nsearch)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(statp, ENOSYS);
    return real(statp, name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_search(const char *name, int class, int type, unsigned char *answer,
                               int anslen)
{
    return socksify_res_search(name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_search(const char *name, int class, int type,
                                 unsigned char *answer, int anslen)
{
    return socksify_res_search(name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_nsearch(res_state statp, const char *name, int class, int type,
                                unsigned char *answer, int anslen)
{
    return socksify_res_nsearch(statp, name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_nsearch(res_state statp, const char *name, int class, int type,
                                  unsigned char *answer, int anslen)
{
    return socksify_res_nsearch(statp, name, class, type, answer, anslen);
}
