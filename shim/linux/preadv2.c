/* The preadv2() hook (and preadv64v2(), the same call with a 64-bit offset on 32-bit
 * systems): with the offset -1 it reads a socket as readv() does (vecflags.h), so on a
 * carried socket (carry.h) the envelope is stripped, as readv.c does. Any other offset,
 * a flag a socket refuses, or any other descriptor: the real call (ESPIPE for an
 * offset on a socket, EOPNOTSUPP for the flag), with no system call of the shim's.
 * preadv() needs no hook: on a socket it fails before reading. */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "carried.h"
#include "carry.h"
#include "edge.h"
#include "real.h"
#include "socksify_wire.h"
#include "vecflags.h"

/* The read as readv(), if fd is a carried socket: sets *handled; -errno inside. */
static ssize_t carried_read(int fd, const struct iovec *iov, int iovcnt, int rwf,
                            int *handled)
{
    struct msghdr m;

    *handled = 0;
    if (!socksify_carried_maybe(fd) || (rwf & ~SOCKSIFY_RWF_SOCKET) != 0 || iovcnt < 0
        || iovcnt > IOV_MAX || (iov == NULL && iovcnt != 0))
        return 0;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)iovcnt;
    return socksify_carry_recvmsg(fd, &m, socksify_rwf_msg_flags(rwf), handled);
}

SOCKSIFY_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset,
                                int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (offset == -1) {
        n = carried_read(fd, iov, iovcnt, flags, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(preadv2)(fd, iov, iovcnt, offset, flags);
}

SOCKSIFY_EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int iovcnt,
                                   off64_t offset, int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (offset == -1) {
        n = carried_read(fd, iov, iovcnt, flags, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(preadv64v2)(fd, iov, iovcnt, offset, flags);
}
