/* The process's kept control connections (ctlconn.h). */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "ctlconn.h"
#include "io.h"
#include "log.h"
#include "real.h"

/* How long to wait between retries when the daemon's listen backlog is full. */
#define BACKLOG_RETRY_MS 10

/* A kept connection: its descriptor, the process that opened it (a forked child has a
 * copy it must not use), and the socket's identity (the program may close the
 * descriptor and get the number back for a file of its own). `holder` is 0 while the
 * slot is free, else the pid of the process one of whose threads uses it: a holder
 * that is not this process is a parent whose thread was using it when it forked, so
 * nobody here does. Only the thread holding a slot touches the rest of it. */
struct slot {
    int holder;
    int fd;
    pid_t pid;
    dev_t dev;
    ino_t ino;
};

static struct slot slots[SOCKSIFY_CTLCONN_KEPT] = {
#define FREE_SLOT {.holder = 0, .fd = -1}
    FREE_SLOT, FREE_SLOT, FREE_SLOT, FREE_SLOT,
#undef FREE_SLOT
};

_Static_assert(SOCKSIFY_CTLCONN_KEPT == 4, "one FREE_SLOT per kept connection");

/* Is the slot's fd still the socket we opened (or, in a forked child, its copy)? */
static int same_socket(const struct slot *k)
{
    struct stat st;

    return fstat(k->fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == k->dev
           && st.st_ino == k->ino;
}

/* Drop a slot's connection: close it if it is still our socket (a forked child's copy
 * is ours to close; a number the program closed and reused is not). */
static void drop(struct slot *k)
{
    if (k->fd >= 0 && same_socket(k))
        SOCKSIFY_REAL_HOT(close)(k->fd);
    k->fd = -1;
}

/* Hold a free slot (or one a parent's thread held when this process was forked);
 * NULL if every one is in use here. */
static struct slot *hold(pid_t me)
{
    size_t i;

    for (i = 0; i < SOCKSIFY_CTLCONN_KEPT; i++) {
        int seen = __atomic_load_n(&slots[i].holder, __ATOMIC_ACQUIRE);

        if (seen != me && __atomic_compare_exchange_n(&slots[i].holder, &seen, me, 0,
                                                      __ATOMIC_ACQUIRE,
                                                      __ATOMIC_RELAXED))
            return &slots[i];
    }
    return NULL;
}

static void release(struct slot *k)
{
    __atomic_store_n(&k->holder, 0, __ATOMIC_RELEASE);
}

/* The socket's directory must be a real directory owned by us: anyone else could
 * otherwise answer our requests. */
static int check_directory(const char *path, int level)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *slash = strrchr(path, '/');
    struct stat st;
    mode_t mode;

    if (slash == NULL) {
        strcpy(dir, ".");
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    if (lstat(dir, &st) < 0) {
        int err = errno;
        SOCKSIFY_LOG_AT(level, "cannot check the control socket's directory %s: %s", dir,
                        socksify_strerror(err));
        return -err;
    }
    if (!S_ISDIR(st.st_mode)) {
        SOCKSIFY_LOG_AT(level, "the control socket's directory %s is not a directory (or "
                        "is a symlink)", dir);
        return -ENOTDIR;
    }
    /* Ours, or root's: a root daemon may serve other users (docs/wire.md), and only
     * root can own a directory root owns. Anyone else's would let them answer us. */
    if (st.st_uid != getuid() && st.st_uid != 0) {
        SOCKSIFY_LOG_AT(level, "the control socket's directory %s is owned by uid %u, not "
                        "%u or root; refusing", dir, (unsigned)st.st_uid,
                        (unsigned)getuid());
        return -EPERM;
    }
    /* Mode 0700, or 0711 for root's shared daemon: a directory others may write into
     * could hold their socket (the same rule as paths.check_private_dir). */
    mode = st.st_mode & 07777;
    if (mode != 0700 && !(st.st_uid == 0 && mode == 0711)) {
        SOCKSIFY_LOG_AT(level, "the control socket's directory %s has mode %04o, not "
                        "0700; refusing", dir, (unsigned)mode);
        return -EPERM;
    }
    return 0;
}

static int connect_control(int fd, const struct sockaddr_un *sun, int64_t deadline)
{
    for (;;) {
        int r;

        if (socksify_real.connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EINPROGRESS) {
            r = socksify_wait_fd(fd, POLLOUT, deadline);
            return r < 0 ? r : socksify_socket_error(fd);
        }
        if (errno != EAGAIN)
            return -errno;
        /* The listen backlog is full: wait a little and try again. */
        if (socksify_now_ms() + BACKLOG_RETRY_MS >= deadline)
            return -ETIMEDOUT;
        poll(NULL, 0, BACKLOG_RETRY_MS);
    }
}

/* The process that accepted must run as us or as root (a root daemon serving its
 * allow_users): the directory check already keeps others out, this also catches a
 * symlink in it to someone else's socket -- before the request, and the program's own
 * socket with it, is sent. */
static int check_peer(int fd, const char *path, int level)
{
    struct ucred cred;
    socklen_t len = sizeof cred;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        int err = errno;
        SOCKSIFY_LOG_AT(level, "cannot learn who serves %s: %s", path,
                        socksify_strerror(err));
        return -err;
    }
    if (cred.uid != getuid() && cred.uid != 0) {
        SOCKSIFY_LOG_AT(level, "the daemon at %s runs as uid %u, not %u or root; "
                        "refusing", path, (unsigned)cred.uid, (unsigned)getuid());
        return -EPERM;
    }
    return 0;
}

/* A new connection to the daemon, checked; -errno. */
static int open_control(int64_t deadline, int level)
{
    const struct socksify_config *cfg = socksify_config();
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd, r;

    if (cfg->socket_path_error < 0)
        return cfg->socket_path_error;
    if ((r = check_directory(cfg->socket_path, level)) < 0)
        return r;
    /* Our own fd, so it may be non-blocking; the app's fds are never touched. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        SOCKSIFY_LOG_AT(level, "cannot create the control socket: %s", socksify_strerror(-r));
        return r;
    }
    memcpy(sun.sun_path, cfg->socket_path, strlen(cfg->socket_path) + 1);  /* fits */
    if ((r = connect_control(fd, &sun, deadline)) < 0) {
        SOCKSIFY_LOG_AT(level, "cannot reach the socksify daemon at %s: %s",
                        cfg->socket_path, socksify_strerror(-r));
        SOCKSIFY_REAL_HOT(close)(fd);
        return r;
    }
    if ((r = check_peer(fd, cfg->socket_path, level)) < 0) {
        SOCKSIFY_REAL_HOT(close)(fd);
        return r;
    }
    return fd;
}

/* Is the kept connection good for another request? It must be this process's, and
 * quiet: a daemon that stopped, restarted or closed it when idle has hung up (POLLHUP,
 * or EOF readable), and bytes nobody asked for mean it is out of step. */
static int usable(struct slot *k, pid_t me)
{
    struct pollfd pfd = {.fd = k->fd, .events = POLLIN | POLLRDHUP};

    if (k->pid != me || !same_socket(k))
        return 0;   /* a forked child's copy of its parent's, or the program's fd now */
    return poll(&pfd, 1, 0) == 0;
}

int socksify_ctlconn_take(int64_t deadline, int level, int *reused, int *slot)
{
    pid_t me = getpid();
    struct slot *k = hold(me);
    struct stat st;
    int fd;

    *reused = 0;
    *slot = k == NULL ? -1 : (int)(k - slots);
    if (k == NULL)     /* all in use (threads, a signal handler): one of its own */
        return open_control(deadline, level);
    if (k->fd >= 0) {
        if (usable(k, me)) {
            *reused = 1;
            return k->fd;
        }
        LOG_DEBUG("control connection fd %d is closed or not ours any more; opening "
                  "another", k->fd);
        drop(k);
    }
    fd = open_control(deadline, level);
    if (fd >= 0 && fstat(fd, &st) == 0) {
        k->fd = fd;
        k->pid = me;
        k->dev = st.st_dev;
        k->ino = st.st_ino;
        return fd;     /* released by socksify_ctlconn_give_back() */
    }
    release(k);        /* (cannot tell the new one later: used once, then closed) */
    *slot = -1;
    return fd;
}

void socksify_ctlconn_give_back(int fd, int slot, int ok)
{
    if (slot >= 0 && slot < SOCKSIFY_CTLCONN_KEPT && slots[slot].fd == fd) {
        if (!ok)
            drop(&slots[slot]);   /* its state is unknown: a reply may still come */
        release(&slots[slot]);
        return;
    }
    SOCKSIFY_REAL_HOT(close)(fd);
}

int socksify_ctlconn_retryable(int r)
{
    return r == -EPIPE || r == -ECONNRESET;
}
