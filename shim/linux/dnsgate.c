/* The gate of the res_* hooks (see dnsgate.h). */
#include <errno.h>
#include <netdb.h>

#include "dnsgate.h"
#include "log.h"
#include "resolve.h"
#include "socksify_wire.h"

int socksify_dns_refuse(res_state statp, int err)
{
    h_errno = NO_RECOVERY;
    if (statp != NULL)
        statp->res_h_errno = NO_RECOVERY;
    errno = err;
    return -1;
}

/* 1 when name can be printed in a log line as it is (what RESOLVE can carry). */
static int printable(const char *name)
{
    size_t n = 0;

    for (; name[n] != '\0'; n++)
        if (name[n] < 0x21 || name[n] > 0x7e || n >= SOCKSIFY_MAX_NAME)
            return 0;
    return n > 0;
}

int socksify_dns_gate(res_state statp, const char *call, const char *name)
{
    struct socksify_peer peer;
    int r = socksify_resolve_ask(name, SOCKSIFY_FAMILY_ANY, &peer);

    switch (r) {
    case SOCKSIFY_NAME_REAL:
        LOG_DEBUG("%s(%s): DIRECT, the DNS query may go out", call, name);
        return 0;
    case SOCKSIFY_NAME_PEER:
        LOG_WARN("%s(%s) refused: the name is carried through the chain, whose last hop "
                 "resolves it; a local DNS query would leak it", call, name);
        return socksify_dns_refuse(statp, EACCES);
    case -ENOENT:
        if (printable(name))
            LOG_WARN("%s(%s) refused: the policy does not let this name be looked up "
                     "(the daemon's log says why)", call, name);
        else  /* not printed: it may hold anything, control characters included */
            LOG_WARN("%s refused: the name is empty, longer than %d bytes or not "
                     "printable ASCII", call, SOCKSIFY_MAX_NAME);
        return socksify_dns_refuse(statp, EACCES);
    default:
        LOG_WARN("%s(%s) refused: the socksify daemon did not answer, and a DNS query "
                 "is never made without it", call, name);
        return socksify_dns_refuse(statp, ECONNREFUSED);
    }
}
