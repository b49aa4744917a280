/* The DIRECT cache (cache.h). The generation file is mapped once, read-only, and read
 * without a system call; its 16 bytes are the generation and the daemon's pid
 * (daemon/socksify/generation.py). The table itself is shim/common/dcache.c, shared with
 * the Windows DLL. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "config.h"
#include "dcache.h"
#include "log.h"

#define GEN_SIZE 16

static const volatile uint8_t *gen_map;   /* NULL: not mapped yet, nothing is cached */

/* Map policy.gen beside control.sock, or SOCKET.gen (daemon/socksify/paths.py), the
 * first time the daemon sends a cacheable answer (so the file exists by then). */
static void map_generation(void)
{
    const struct socksify_config *cfg = socksify_config();
    char path[sizeof cfg->socket_path + 16];
    const char *slash;
    struct stat st;
    void *p;
    int fd, n;

    if (cfg->socket_path_error < 0)
        return;
    slash = strrchr(cfg->socket_path, '/');
    if (slash != NULL && strcmp(slash + 1, "control.sock") == 0)
        n = snprintf(path, sizeof path, "%.*s/policy.gen",
                     (int)(slash - cfg->socket_path), cfg->socket_path);
    else
        n = snprintf(path, sizeof path, "%s.gen", cfg->socket_path);
    if (n < 0 || (size_t)n >= sizeof path)
        return;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    /* Only a file of our own uid or root's may tell us what holds (as the socket's
     * directory, control.c). */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= GEN_SIZE
        && (st.st_uid == getuid() || st.st_uid == 0)) {
        const volatile uint8_t *none = NULL;

        p = mmap(NULL, GEN_SIZE, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED
            && !__atomic_compare_exchange_n(&gen_map, &none, (const volatile uint8_t *)p,
                                            0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            munmap(p, GEN_SIZE);  /* another thread mapped it first */
    }
    close(fd);
}

/* The daemon's generation now, or 0 if nothing may be trusted. */
static uint64_t current_generation(void)
{
    const volatile uint8_t *map = __atomic_load_n(&gen_map, __ATOMIC_ACQUIRE);
    uint64_t gen, pid;

    if (map == NULL)
        return 0;
    socksify_dcache_read_file(map, &gen, &pid);
    if (gen == 0 || pid == 0 || pid > INT32_MAX)
        return 0;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return 0;   /* killed without a word: ask (and fail closed) */
    return gen;
}

int socksify_cache_direct(const struct socksify_connect_req *req)
{
    return socksify_dcache_hit(req, current_generation());
}

uint64_t socksify_cache_generation(void)
{
    return current_generation();
}

/* CARRY answers: a slot per destination, as dcache.c keeps DIRECT ones. */
#define CARRY_SLOTS 256

struct carry_slot {
    int busy;
    struct socksify_connect_req req;   /* generation 0 in rep: empty */
    struct socksify_reply rep;
};

static struct carry_slot carry_slots[CARRY_SLOTS];

static struct carry_slot *carry_slot_of(const struct socksify_connect_req *req)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < 16; i++)
        h = (h ^ req->addr[i]) * 16777619u;
    h = (h ^ req->port) * 16777619u;
    return &carry_slots[h % CARRY_SLOTS];
}

uint64_t socksify_cache_reply_generation(const struct socksify_reply *rep)
{
    uint64_t gen = 0;

    for (int i = 0; i < 8; i++)
        gen = gen << 8 | rep->token[i];
    return gen;
}

int socksify_cache_carry(const struct socksify_connect_req *req, struct socksify_reply *rep)
{
    struct carry_slot *s = carry_slot_of(req);
    uint64_t gen = current_generation();
    int hit;

    if (gen == 0 || __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return 0;
    hit = s->rep.verdict == SOCKSIFY_VERDICT_CARRY
        && socksify_cache_reply_generation(&s->rep) == gen
        && s->req.family == req->family && s->req.port == req->port
        && memcmp(s->req.addr, req->addr, 16) == 0;
    if (hit)
        *rep = s->rep;
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return hit;
}

int socksify_cache_has_token(const uint8_t *token)
{
    uint64_t gen = current_generation();
    int found = 0;

    for (size_t i = 0; i < CARRY_SLOTS && !found; i++) {
        struct carry_slot *s = &carry_slots[i];

        if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
            continue;
        found = s->rep.verdict == SOCKSIFY_VERDICT_CARRY
            && socksify_cache_reply_generation(&s->rep) == gen
            && memcmp(s->rep.token + 8, token, SOCKSIFY_CARRY_TOKEN_SIZE) == 0;
        __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    }
    return found;
}

static void note_carry(const struct socksify_connect_req *req,
                       const struct socksify_reply *rep)
{
    struct carry_slot *s = carry_slot_of(req);

    if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return;
    s->req = *req;
    s->rep = *rep;
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep)
{
    uint64_t gen = rep->verdict == SOCKSIFY_VERDICT_CARRY
        ? socksify_cache_reply_generation(rep) : socksify_dcache_reply_generation(rep);

    if (gen == 0)
        return;
    if (__atomic_load_n(&gen_map, __ATOMIC_ACQUIRE) == NULL)
        map_generation();
    if (rep->verdict == SOCKSIFY_VERDICT_CARRY)
        note_carry(req, rep);
    else
        socksify_dcache_put(req, gen);
}
