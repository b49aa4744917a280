/* Log lines on stderr (see log.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "real.h"

/* SOCKSIFY_LOG, set by the settings (config.c); warnings until then. */
static int log_level = SOCKSIFY_LOG_WARN;

void socksify_log_set_level(int level)
{
    __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

static const char *level_name(int level)
{
    switch (level) {
    case SOCKSIFY_LOG_WARN: return "WARNING";
    case SOCKSIFY_LOG_INFO: return "INFO";
    default:                return "DEBUG";
    }
}

const char *socksify_strerror(int err)
{
    const char *desc = strerrordesc_np(err);

    return desc != NULL ? desc : "unknown error";
}

/* stderr is the program's fd 2. A program that closed it (a daemon) may have a socket
 * of its own there: writing our line would inject it into the program's stream, or
 * kill the program with SIGPIPE on a socket not connected yet. Only a Unix socket (a
 * journal's stream) is stderr-like; an IPv4/IPv6 socket on fd 2 gets nothing. */
static int stderr_is_ours_to_write(void)
{
    int domain;
    socklen_t len = sizeof domain;

    if (getsockopt(STDERR_FILENO, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        return 1;  /* not a socket (ENOTSOCK), or closed (EBADF: the write fails) */
    return domain == AF_UNIX;
}

void socksify_log(int level, const char *func, const char *file, int line,
                  const char *fmt, ...)
{
    char buf[512];
    const char *base;
    size_t len;
    int n, saved_errno = errno;
    va_list ap;

    if (level > __atomic_load_n(&log_level, __ATOMIC_RELAXED) || !stderr_is_ours_to_write())
        return;
    base = strrchr(file, '/');
    base = base ? base + 1 : file;
    n = snprintf(buf, sizeof buf, "socksify[%d] %s %s %s:%d: ", (int)getpid(),
                 level_name(level), func, base, line);
    if (n < 0)
        goto out;
    len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    va_start(ap, fmt);
    n = vsnprintf(buf + len, sizeof buf - len, fmt, ap);
    va_end(ap);
    if (n > 0)
        len += (size_t)n < sizeof buf - len ? (size_t)n : sizeof buf - len - 1;
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;  /* truncated: keep room for the newline */
    buf[len++] = '\n';
    for (size_t off = 0; off < len;) {
        /* libc's writev(): not the shim's write() or writev() hooks, which log */
        struct iovec iov = {buf + off, len - off};
        ssize_t w = SOCKSIFY_REAL_HOT(writev)(STDERR_FILENO, &iov, 1);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
out:
    errno = saved_errno;
}
