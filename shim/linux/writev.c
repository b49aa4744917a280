/* The writev() hook: writev() on a UDP socket connect()ed to a carried destination
 * (carry.h) is sendmsg() with no address and no flags, enveloped; every other
 * descriptor goes straight to libc with no system call of the shim's. (The shim's own
 * lines on stderr, log.c and dlsym.c, do not come through here.) */
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

SOCKSIFY_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    int saved_errno = errno, handled = 0;
    struct msghdr m;
    ssize_t n;

    /* a count the kernel refuses (EINVAL) or iovecs it cannot read (EFAULT): its own
     * answer, from the real call (never sent without the envelope: the socket's
     * kernel peer is the carrier, which drops it) */
    if (socksify_carried_maybe(fd) && iovcnt >= 0 && iovcnt <= IOV_MAX
        && (iov != NULL || iovcnt == 0)) {
        socksify_init();
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)iov;
        m.msg_iovlen = (size_t)iovcnt;
        n = socksify_carry_send_connected(fd, &m, 0, &handled);
        if (handled)
            return socksify_edge(n, saved_errno);
    }
    return SOCKSIFY_REAL_HOT(writev)(fd, iov, iovcnt);
}
