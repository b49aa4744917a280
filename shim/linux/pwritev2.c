/* The pwritev2() hook (and pwritev64v2(), the same call with a 64-bit offset on 32-bit
 * systems): with the offset -1 it writes a socket as writev() does (vecflags.h), so on
 * a UDP socket connect()ed to a carried destination (carry.h) the datagram is
 * enveloped, as writev.c does. Any other offset, a flag a socket refuses, or any other
 * descriptor: the real call (ESPIPE for an offset on a socket, EOPNOTSUPP for the
 * flag), with no system call of the shim's. pwritev() needs no hook: on a socket it
 * fails before sending. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "carried.h"
#include "carry.h"
#include "edge.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"
#include "vecflags.h"

/* The write as writev(), if fd is connected to a carried destination: sets *handled;
 * -errno inside. */
static ssize_t carried_write(int fd, const struct iovec *iov, int iovcnt, int rwf,
                             int *handled)
{
    struct msghdr m;

    *handled = 0;
    if (!socksify_carried_maybe(fd) || (rwf & ~SOCKSIFY_RWF_SOCKET) != 0 || iovcnt < 0
        || iovcnt > IOV_MAX || (iov == NULL && iovcnt != 0))
        return 0;
    socksify_init();
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)iovcnt;
    return socksify_carry_send_connected(fd, &m, socksify_rwf_msg_flags(rwf), handled);
}

SOCKSIFY_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt, off_t offset,
                                 int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (offset == -1) {
        n = carried_write(fd, iov, iovcnt, flags, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(pwritev2)(fd, iov, iovcnt, offset, flags);
}

SOCKSIFY_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int iovcnt,
                                    off64_t offset, int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (offset == -1) {
        n = carried_write(fd, iov, iovcnt, flags, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(pwritev64v2)(fd, iov, iovcnt, offset, flags);
}
