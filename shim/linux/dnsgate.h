/* The gate of the res_* hooks (res_query.c, res_search.c, res_querydomain.c,
 * res_send.c): each of those calls is a DNS query to the configured name servers, made
 * through libc's internal functions that LD_PRELOAD cannot catch, so the hook decides
 * before the real function runs. A name goes out only when the daemon answers DIRECT
 * for it (dns = "local", a direct rule, a hosts-file name); a name the chain carries
 * (PEER), one the policy blocks (FAIL) and any name when the daemon cannot be asked
 * are refused: -1, h_errno NO_RECOVERY (callers give up rather than retry), and a
 * warning that says why. No stand-in answers are made up. */
#ifndef SOCKSIFY_DNSGATE_H
#define SOCKSIFY_DNSGATE_H

#include <resolv.h>

/* 0 when call (for the log) may ask the local resolver about name; else -1 with the
 * refusal set (socksify_dns_refuse) and logged. */
int socksify_dns_gate(res_state statp, const char *call, const char *name);

/* The refusal: h_errno = NO_RECOVERY, statp->res_h_errno too when statp is not NULL,
 * errno = err, and -1. */
int socksify_dns_refuse(res_state statp, int err);

#endif
