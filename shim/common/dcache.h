/* The DIRECT answer table both shims share (docs/wire.md, "Caching"): a destination
 * (family, address, port, socket type) the daemon let go direct is remembered with the
 * policy generation that came with the answer, and holds only while the platform says
 * the daemon's generation is still that one. The platform code (shim/linux/cache.c,
 * shim/windows/gencache.c) reads the generation; this file only keeps the table.
 * Slots have try-locks: a busy slot is a miss (one more question), never a wait. */
#ifndef SOCKSIFY_DCACHE_H
#define SOCKSIFY_DCACHE_H

#include <stdint.h>

#include "socksify_wire.h"

/* 1 if req has a DIRECT answer of generation gen (gen 0: never). */
int socksify_dcache_hit(const struct socksify_connect_req *req, uint64_t gen);

/* The generation a reply may be cached under: its own for a DIRECT reply with
 * SOCKSIFY_FLAG_CACHE (bytes 12-19, the token's first 8), else 0. */
uint64_t socksify_dcache_reply_generation(const struct socksify_reply *rep);

/* Remember req as DIRECT under gen (gen 0: nothing is remembered). */
void socksify_dcache_put(const struct socksify_connect_req *req, uint64_t gen);

/* The 16 bytes of a generation file (generation, then pid, big-endian), read twice
 * around the pid until the generation is the same both times. */
void socksify_dcache_read_file(const volatile uint8_t *map, uint64_t *gen, uint64_t *pid);

#endif
