/* The res_querydomain() hooks: res_querydomain, res_nquerydomain and their __res_*
 * names. The query is for "name.domain" (or name alone when domain is NULL), so that
 * joined name is the gate's (dnsgate.h); one too long for DNS is refused here. */
#include <errno.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

#include "dnsgate.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

/* 0 when the joined name may be asked about; else -1 with the refusal set. */
static int gate(res_state statp, const char *call, const char *name, const char *domain)
{
    char full[SOCKSIFY_MAX_NAME + 2];
    int n;

    if (name == NULL)
        return socksify_dns_refuse(statp, EINVAL);
    n = domain != NULL ? snprintf(full, sizeof full, "%s.%s", name, domain)
                       : snprintf(full, sizeof full, "%s", name);
    if (n < 0 || (size_t)n >= sizeof full)
        return socksify_dns_refuse(statp, EMSGSIZE);
    return socksify_dns_gate(statp, call, full);
}

static int socksify_res_querydomain(const char *name, const char *domain, int class,
                                    int type, unsigned char *answer, int anslen)
{
    __typeof__(socksify_real.res_querydomain) real;

    socksify_init();
    if (gate(&_res, "res_querydomain", name, domain) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_querydomain)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(&_res, ENOSYS);
    return real(name, domain, class, type, answer, anslen);
}

static int socksify_res_nquerydomain(res_state statp, const char *name, const char *domain,
                                     int class, int type, unsigned char *answer,
                                     int anslen)
{
    __typeof__(socksify_real.res_nquerydomain) real;

    socksify_init();
    if (gate(statp, "res_nquerydomain", name, domain) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_nquerydomain)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(statp, ENOSYS);
    return real(statp, name, domain, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_querydomain(const char *name, const char *domain, int class,
                                    int type, unsigned char *answer, int anslen)
{
    return socksify_res_querydomain(name, domain, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_querydomain(const char *name, const char *domain, int class,
                                      int type, unsigned char *answer, int anslen)
{
    return socksify_res_querydomain(name, domain, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int res_nquerydomain(res_state statp, const char *name, const char *domain,
                                     int class, int type, unsigned char *answer,
                                     int anslen)
{
    return socksify_res_nquerydomain(statp, name, domain, class, type, answer, anslen);
}

SOCKSIFY_EXPORT int __res_nquerydomain(res_state statp, const char *name,
                                       const char *domain, int class, int type,
                                       unsigned char *answer, int anslen)
{
    return socksify_res_nquerydomain(statp, name, domain, class, type, answer, anslen);
}
