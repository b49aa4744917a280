/* The DIRECT cache (cache.h). The generation file is mapped once, read-only, and read
 * without a system call; its 16 bytes are the generation and the daemon's pid
 * (daemon/socksify/generation.py). Slots have try-locks as in peers.c: a busy slot is a
 * miss (one more question to the daemon), never a wait. */
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
#include "log.h"

#define SLOTS 256
#define GEN_SIZE 16

struct slot {
    int busy;
    uint64_t generation;      /* 0: empty */
    uint8_t family, socktype;
    uint16_t port;
    uint8_t addr[16];
};

static struct slot slots[SLOTS];
static const volatile uint8_t *gen_map;   /* NULL: not mapped yet, nothing is cached */

static uint64_t be64(const volatile uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

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
    uint64_t gen, again, pid;

    if (map == NULL)
        return 0;
    do {
        gen = be64(map);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        pid = be64(map + 8);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        again = be64(map);
    } while (gen != again);
    if (gen == 0 || pid == 0 || pid > INT32_MAX)
        return 0;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return 0;   /* killed without a word: ask (and fail closed) */
    return gen;
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

int socksify_cache_direct(const struct socksify_connect_req *req)
{
    struct slot *s = slot_of(req);
    uint64_t gen = current_generation();
    int hit;

    if (gen == 0 || __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return 0;
    hit = s->generation == gen && same(s, req);
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return hit;
}

void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep)
{
    struct slot *s = slot_of(req);
    uint64_t gen = 0;
    int i;

    if (rep->verdict != SOCKSIFY_VERDICT_DIRECT || !(rep->flags & SOCKSIFY_FLAG_CACHE))
        return;
    if (__atomic_load_n(&gen_map, __ATOMIC_ACQUIRE) == NULL)
        map_generation();
    for (i = 0; i < 8; i++)
        gen = gen << 8 | rep->token[i];
    if (gen == 0 || __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return;
    s->generation = gen;
    s->family = req->family;
    s->socktype = req->socktype;
    s->port = req->port;
    memcpy(s->addr, req->addr, 16);
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}
