/* The res_send() hooks: res_send, res_nsend and their __res_* names. They send a whole
 * query message the program built; the name its question asks about
 * (shim/common/dnsquestion.h) is the gate's (dnsgate.h). A message the reader does not
 * take (not a standard query with one plain question) is refused: what it would say
 * to the name server cannot be judged. */
#include <errno.h>
#include <resolv.h>
#include <stdint.h>

#include "dnsgate.h"
#include "dnsquestion.h"
#include "init.h"
#include "log.h"
#include "real.h"
#include "socksify_wire.h"

/* 0 when the message's question may be sent; else -1 with the refusal set. */
static int gate(res_state statp, const char *call, const unsigned char *msg, int len)
{
    char name[SOCKSIFY_MAX_NAME + 1];
    int r;

    if (msg == NULL || len < 0)
        return socksify_dns_refuse(statp, EINVAL);
    r = socksify_dns_question(msg, (size_t)len, name, sizeof name, NULL);
    if (r < 0) {
        LOG_WARN("%s refused: the message is not a standard query with one question "
                 "this shim can read (%s)", call, socksify_strerror(-r));
        return socksify_dns_refuse(statp, EINVAL);
    }
    return socksify_dns_gate(statp, call, name);
}

static int socksify_res_send(const unsigned char *msg, int len, unsigned char *answer,
                             int anslen)
{
    __typeof__(socksify_real.res_send) real;

    socksify_init();
    if (gate(&_res, "res_send", msg, len) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_send)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(&_res, ENOSYS);
    return real(msg, len, answer, anslen);
}

static int socksify_res_nsend(res_state statp, const unsigned char *msg, int len,
                              unsigned char *answer, int anslen)
{
    __typeof__(socksify_real.res_nsend) real;

    socksify_init();
    if (gate(statp, "res_nsend", msg, len) < 0)
        return -1;
    if ((real = SOCKSIFY_REAL_OPTIONAL(res_nsend)) == NULL)  /* libresolv not loaded */
        return socksify_dns_refuse(statp, ENOSYS);
    return real(statp, msg, len, answer, anslen);
}

SOCKSIFY_EXPORT int res_send(const unsigned char *msg, int len, unsigned char *answer,
                             int anslen)
{
    return socksify_res_send(msg, len, answer, anslen);
}

SOCKSIFY_EXPORT int __res_send(const unsigned char *msg, int len, unsigned char *answer,
                               int anslen)
{
    return socksify_res_send(msg, len, answer, anslen);
}

SOCKSIFY_EXPORT int res_nsend(res_state statp, const unsigned char *msg, int len,
                              unsigned char *answer, int anslen)
{
    return socksify_res_nsend(statp, msg, len, answer, anslen);
}

SOCKSIFY_EXPORT int __res_nsend(res_state statp, const unsigned char *msg, int len,
                                unsigned char *answer, int anslen)
{
    return socksify_res_nsend(statp, msg, len, answer, anslen);
}
