/* The handed-off peer table (peers.h). Each slot has its own try-lock: a writer or
 * reader that finds it taken gives up (the note is lost, or getpeername() reports
 * the kernel's peer), so no thread ever waits, and a fork() in the middle of an update
 * cannot leave the child blocked. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "peers.h"

#define SLOTS 1024

struct slot {
    int busy;                 /* try-lock */
    int fd;                   /* -1: empty */
    dev_t dev;
    ino_t ino;
    socklen_t len;
    struct sockaddr_storage addr;
};

static struct slot slots[SLOTS];

static int lock(struct slot *s)
{
    return __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE) == 0;
}

static void unlock(struct slot *s)
{
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

static struct slot *slot_of(int fd)
{
    return &slots[(unsigned)fd % SLOTS];
}

void socksify_peer_note(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct slot *s = slot_of(fd);
    struct stat st;

    if (fd < 0 || len > sizeof s->addr || fstat(fd, &st) < 0 || !lock(s))
        return;
    s->fd = fd + 1;           /* stored +1 so that the zeroed table holds no fd 0 */
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->len = len;
    memcpy(&s->addr, addr, len);
    unlock(s);
}

int socksify_peer_lookup(int fd, struct sockaddr *addr, socklen_t *len)
{
    struct slot *s = slot_of(fd);
    struct stat st;
    int r = -ENOENT;

    if (fd < 0 || len == NULL || fstat(fd, &st) < 0 || !lock(s))
        return -ENOENT;
    if (s->fd == fd + 1 && s->dev == st.st_dev && s->ino == st.st_ino) {
        memcpy(addr, &s->addr, *len < s->len ? *len : s->len);
        *len = s->len;
        r = 0;
    }
    unlock(s);
    return r;
}

/* 1 if fd's slot names fd (no system call). */
static int maybe(int fd)
{
    return fd >= 0 && __atomic_load_n(&slot_of(fd)->fd, __ATOMIC_RELAXED) == fd + 1;
}

void socksify_peer_dup(int oldfd, int newfd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    struct slot *s;

    if (oldfd == newfd || newfd < 0)
        return;
    if (maybe(oldfd) && socksify_peer_lookup(oldfd, (struct sockaddr *)&ss, &len) == 0) {
        socksify_peer_note(newfd, (struct sockaddr *)&ss, len);
        return;
    }
    s = slot_of(newfd);
    if (maybe(newfd) && lock(s)) {
        if (s->fd == newfd + 1)
            __atomic_store_n(&s->fd, 0, __ATOMIC_RELAXED);
        unlock(s);
    }
}
