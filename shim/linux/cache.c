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

void socksify_cache_note(const struct socksify_connect_req *req,
                         const struct socksify_reply *rep)
{
    uint64_t gen = socksify_dcache_reply_generation(rep);

    if (gen == 0)
        return;
    if (__atomic_load_n(&gen_map, __ATOMIC_ACQUIRE) == NULL)
        map_generation();
    socksify_dcache_put(req, gen);
}
