/* The res_query() hooks: res_query, res_nquery and their __res_* names (the ones
 * resolv.h mapped them to before glibc 2.34, still exported for old binaries). The
 * query is for name exactly, so name alone is the gate's (dnsgate.h). */
#include <errno.h>
#include <resolv.h>

#include "dnsgate.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

static int socksify_res_query(const char *name, int class, int type, unsigned char *answer,
                              int anslen)
{
    __typeof__(socksify_real.res_query) real;

    socksify_init();
    if (name == NULL)
        return socksify_dns_refuse(&_res, EINVAL);
    if (socksify_dns_gate(&_res, "res_query", name) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_query)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(&_res, ENOSYS);
    return real(name, class, type, answer, anslen);
}

static int socksify_res_nquery(res_state statp, const char *name, int class, int type,
                               unsigned char *answer, int anslen)
{
    __typeof__(socksify_real.res_nquery) real;

    socksify_init();
    if (name == NULL)
        return socksify_dns_refuse(statp, EINVAL);
    if (socksify_dns_gate(statp, "res_nquery", name) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_nquery)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(statp, ENOSYS);
    return real(statp, name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_query(const char *name, int class, int type, unsigned char *answer,
                              int anslen)
{
    return socksify_res_query(name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_query(const char *name, int class, int type,
                                unsigned char *answer, int anslen)
{
    return socksify_res_query(name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_nquery(res_state statp, const char *name, int class, int type,
                               unsigned char *answer, int anslen)
{
    return socksify_res_nquery(statp, name, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_nquery(res_state statp, const char *name, int class, int type,
                                 unsigned char *answer, int anslen)
{
    return socksify_res_nquery(statp, name, class, type, answer, anslen);
}
