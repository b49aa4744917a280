/* The res_query() hooks: res_query, res_nquery and their __res_* names (the ones
 * resolv.h mapped them to before glibc 2.34, still exported for old binaries). The
 * query is for name exactly, so name alone is the gate's (dnsgate.h). */
#include <errno.h>
#include <resolv.h>

#include "dnsgate.h"
#include "init.h"
#include "socksify_wire.h"

typedef int (*query_fn)(const char *, int, int, unsigned char *, int);
typedef int (*nquery_fn)(res_state, const char *, int, int, unsigned char *, int);

static query_fn real_query;
static nquery_fn real_nquery;

void socksify_res_query_resolve(void)
{
    __atomic_store_n(&real_query, (query_fn)socksify_dns_real("res_query", "__res_query"),
                     __ATOMIC_RELEASE);
    __atomic_store_n(&real_nquery,
                     (nquery_fn)socksify_dns_real("res_nquery", "__res_nquery"),
                     __ATOMIC_RELEASE);
}

static int socksify_res_query(const char *name, int class, int type, unsigned char *answer,
                              int anslen)
{
    query_fn real;

    socksify_init();
    if (name == NULL)
        return socksify_dns_refuse(&_res, EINVAL);
    if (socksify_dns_gate(&_res, "res_query", name) < 0)
        return -1;
    if ((real = __atomic_load_n(&real_query, __ATOMIC_ACQUIRE)) == NULL) {
        socksify_res_query_resolve();  /* libresolv loaded after start-up? */
        if ((real = __atomic_load_n(&real_query, __ATOMIC_ACQUIRE)) == NULL)
            return socksify_dns_refuse(&_res, ENOSYS);
    }
    return real(name, class, type, answer, anslen);
}

static int socksify_res_nquery(res_state statp, const char *name, int class, int type,
                               unsigned char *answer, int anslen)
{
    nquery_fn real;

    socksify_init();
    if (name == NULL)
        return socksify_dns_refuse(statp, EINVAL);
    if (socksify_dns_gate(statp, "res_nquery", name) < 0)
        return -1;
    if ((real = __atomic_load_n(&real_nquery, __ATOMIC_ACQUIRE)) == NULL) {
        socksify_res_query_resolve();
        if ((real = __atomic_load_n(&real_nquery, __ATOMIC_ACQUIRE)) == NULL)
            return socksify_dns_refuse(statp, ENOSYS);
    }
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
