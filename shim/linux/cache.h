/* Cached DIRECT answers (docs/wire.md, "Caching"): a destination the daemon let go
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

/* Remember a DIRECT reply that carries SOCKSIFY_FLAG_CACHE (others are ignored). */
void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep);

#endif
