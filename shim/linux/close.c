/* The close() and close_range() hooks: a handed-off UDP socket's last copy tells the
 * daemon first (UNWRAP, unwrap.h), so its association ends and the port it holds is
 * let go. Every other descriptor: one check without a system call, then libc. */
#include <errno.h>
#include <unistd.h>

#include "carried.h"
#include "real.h"
#include "socksify_wire.h"
#include "unwrap.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

SOCKSIFY_EXPORT int close(int fd)
{
    if (socksify_carried_maybe(fd))
        socksify_unwrap_closing(fd);
    return SOCKSIFY_REAL_HOT(close)(fd);
}

SOCKSIFY_EXPORT int close_range(unsigned int fd, unsigned int max_fd, int flags)
{
    int (*real)(unsigned int, unsigned int, int) = SOCKSIFY_REAL_OPTIONAL(close_range);

    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (!((unsigned)flags & CLOSE_RANGE_CLOEXEC) && fd <= max_fd)
        socksify_unwrap_closing_range(fd, max_fd);
    return real(fd, max_fd, flags);
}
