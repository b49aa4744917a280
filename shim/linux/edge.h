/* The hooks' edge: every function inside the shim returns a count or -errno; the hook
 * turns that into what libc's caller expects, once, here: -1 with errno set, or the
 * count with the caller's errno as it was (a hook that succeeds leaves errno alone). */
#ifndef SOCKSIFY_EDGE_H
#define SOCKSIFY_EDGE_H

#include <errno.h>
#include <sys/types.h>

static inline ssize_t socksify_edge(ssize_t n, int saved_errno)
{
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    errno = saved_errno;
    return n;
}

#endif
