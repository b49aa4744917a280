/* The DIRECT answer table (dcache.h). GCC's __atomic builtins: cc on Linux and mingw
 * both have them. */
#include <string.h>

#include "dcache.h"

#define SLOTS 256

struct slot {
    int busy;
    uint64_t generation;      /* 0: empty */
    uint8_t family, socktype;
    uint16_t port;
    uint8_t addr[16];
};

static struct slot slots[SLOTS];

static uint64_t be64(const volatile uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void socksify_dcache_read_file(const volatile uint8_t *map, uint64_t *gen, uint64_t *pid)
{
    uint64_t again;

    do {
        *gen = be64(map);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        *pid = be64(map + 8);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        again = be64(map);
    } while (*gen != again);
}

static struct slot *slot_of(const struct socksify_connect_req *req)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < 16; i++)
        h = (h ^ req->addr[i]) * 16777619u;
    h = (h ^ req->port) * 16777619u;
    h = (h ^ req->socktype) * 16777619u;
    return &slots[h % SLOTS];
}

static int same(const struct slot *s, const struct socksify_connect_req *req)
{
    return s->family == req->family && s->socktype == req->socktype
        && s->port == req->port && memcmp(s->addr, req->addr, 16) == 0;
}

int socksify_dcache_hit(const struct socksify_connect_req *req, uint64_t gen)
{
    struct slot *s = slot_of(req);
    int hit;

    if (gen == 0 || __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return 0;
    hit = s->generation == gen && same(s, req);
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return hit;
}

uint64_t socksify_dcache_reply_generation(const struct socksify_reply *rep)
{
    uint64_t gen = 0;
    int i;

    if (rep->verdict != SOCKSIFY_VERDICT_DIRECT || !(rep->flags & SOCKSIFY_FLAG_CACHE))
        return 0;
    for (i = 0; i < 8; i++)
        gen = gen << 8 | rep->token[i];
    return gen;
}

void socksify_dcache_put(const struct socksify_connect_req *req, uint64_t gen)
{
    struct slot *s = slot_of(req);

    if (gen == 0 || __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return;
    s->generation = gen;
    s->family = req->family;
    s->socktype = req->socktype;
    s->port = req->port;
    memcpy(s->addr, req->addr, 16);
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}
