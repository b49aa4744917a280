/* The readv() hook: readv() on a carried socket (carry.h) is recvmsg() with no address
 * and no flags, its envelope stripped; every other descriptor (files, pipes, TCP
 * sockets...) goes straight to libc with no system call of the shim's. preadv() and
 * pwritev() need no hook: on a socket they fail with ESPIPE before anything is read. */
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

SOCKSIFY_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    int saved_errno = errno, handled = 0;
    struct msghdr m;
    ssize_t n;

    /* a count the kernel refuses (EINVAL) or iovecs it cannot read (EFAULT): its own
     * answer, from the real call */
    if (socksify_carried_maybe(fd) && iovcnt >= 0 && iovcnt <= IOV_MAX
        && (iov != NULL || iovcnt == 0)) {
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)iov;
        m.msg_iovlen = (size_t)iovcnt;
        n = socksify_carry_recvmsg(fd, &m, 0, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(readv)(fd, iov, iovcnt);
}
