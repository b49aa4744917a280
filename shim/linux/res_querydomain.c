/* The res_querydomain() hooks: res_querydomain, res_nquerydomain and their __res_*
 * names. The query is for "name.domain" (or name alone when domain is NULL), so that
 * joined name is the gate's (dnsgate.h); one too long for DNS is refused here. */
#include <errno.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

#include "dnsgate.h"
#include "init.h"
#include "socksify_wire.h"

typedef int (*querydomain_fn)(const char *, const char *, int, int, unsigned char *, int);
typedef int (*nquerydomain_fn)(res_state, const char *, const char *, int, int,
                               unsigned char *, int);

static querydomain_fn real_querydomain;
static nquerydomain_fn real_nquerydomain;

void socksify_res_querydomain_resolve(void)
{
    __atomic_store_n(&real_querydomain, (querydomain_fn)socksify_dns_real(
                         "res_querydomain", "__res_querydomain"), __ATOMIC_RELEASE);
    __atomic_store_n(&real_nquerydomain, (nquerydomain_fn)socksify_dns_real(
                         "res_nquerydomain", "__res_nquerydomain"), __ATOMIC_RELEASE);
}

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
    querydomain_fn real;

    socksify_init();
    if (gate(&_res, "res_querydomain", name, domain) < 0)
        return -1;
    if ((real = __atomic_load_n(&real_querydomain, __ATOMIC_ACQUIRE)) == NULL) {
        socksify_res_querydomain_resolve();  /* libresolv loaded after start-up? */
        if ((real = __atomic_load_n(&real_querydomain, __ATOMIC_ACQUIRE)) == NULL)
            return socksify_dns_refuse(&_res, ENOSYS);
    }
    return real(name, domain, class, type, answer, anslen);
}

static int socksify_res_nquerydomain(res_state statp, const char *name, const char *domain,
                                     int class, int type, unsigned char *answer,
                                     int anslen)
{
    nquerydomain_fn real;

    socksify_init();
    if (gate(statp, "res_nquerydomain", name, domain) < 0)
        return -1;
    if ((real = __atomic_load_n(&real_nquerydomain, __ATOMIC_ACQUIRE)) == NULL) {
        socksify_res_querydomain_resolve();
        if ((real = __atomic_load_n(&real_nquerydomain, __ATOMIC_ACQUIRE)) == NULL)
            return socksify_dns_refuse(statp, ENOSYS);
    }
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
