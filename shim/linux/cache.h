/* Cached DIRECT and CARRY answers (docs/wire.md, "Caching"): a destination the daemon let go
 * direct, with the policy generation that came with the answer, is connected without
 * asking again while the daemon's generation file still holds that generation and the
 * daemon is alive. */
#ifndef SOCKSIFY_CACHE_H
#define SOCKSIFY_CACHE_H

#include <stdint.h>

#include "socksify_wire.h"

/* 1 if req (family, address, port, socket type) has a DIRECT answer that still holds,
 * else 0. */
int socksify_cache_direct(const struct socksify_connect_req *req);

/* Remember a DIRECT reply that carries SOCKSIFY_FLAG_CACHE, or a CARRY reply with a
 * generation (others are ignored). */
void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep);

/* 1 and the remembered CARRY reply in *rep if req (a datagram destination) has a CARRY
 * answer whose generation still holds, else 0 (docs/wire.md, "Carried datagrams"). */
int socksify_cache_carry(const struct socksify_connect_req *req, struct socksify_reply *rep);

/* The daemon's policy generation now (0: nothing may be trusted, or not known yet). */
uint64_t socksify_cache_generation(void);

/* The generation a CARRY reply came with (bytes 12-19). */
uint64_t socksify_cache_reply_generation(const struct socksify_reply *rep);

/* 1 if token is the token of a CARRY answer remembered in this process. */
int socksify_cache_has_token(const uint8_t *token);

#endif
