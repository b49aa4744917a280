/* The sendto() hook: a datagram with a destination outside the host is the daemon's to
 * allow (CONNECT with socktype 2, docs/wire.md "Datagram sockets"); MSG_FASTOPEN with a
 * destination on a stream socket connects as connect() does, then sends without the
 * flag, so the data never leaves in a SYN that bypasses the chain. A datagram the
 * daemon carries (CARRY) goes enveloped to its carrier (carry.h). No destination: sent
 * as asked (a connected socket's connect() was checked), enveloped on a socket
 * connected to a carried destination. */

/* glibc declares sendto() with a transparent-union argument under _GNU_SOURCE; this
 * file defines it with the plain POSIX prototype, so it is built without _GNU_SOURCE. */
#undef _GNU_SOURCE
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "carry.h"
#include "connect.h"
#include "datagram.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

/* The hook's logic; returns the bytes sent or -errno. */
static ssize_t socksify_sendto(int fd, const void *buf, size_t len, int flags,
                               const struct sockaddr *addr, socklen_t addrlen)
{
    struct socksify_carry carry;
    struct iovec iov = {(void *)buf, len};
    struct msghdr msg = {NULL, 0, &iov, 1, NULL, 0, 0};
    ssize_t n;
    int handled, r = socksify_send_check(fd, addr, addrlen, flags, &carry);

    if (r < 0)
        return r;
    if (r == SOCKSIFY_SEND_CARRY)
        return socksify_carry_send(fd, &carry, &msg, flags, 0);
    if (addr == NULL || addrlen == 0) {
        n = socksify_carry_send_connected(fd, &msg, flags, &handled);
        if (handled)
            return n;
    }
    if (r == SOCKSIFY_SEND_FASTOPEN) {
        if ((r = socksify_connect_checked(fd, addr, addrlen)) < 0)
            return r;
        addr = NULL;
        addrlen = 0;
        flags &= ~MSG_FASTOPEN;
    }
    n = socksify_real.sendto(fd, buf, len, flags, addr, addrlen);
    return n < 0 ? -errno : n;
}

SOCKSIFY_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                               const struct sockaddr *addr, socklen_t addrlen)
{
    int saved_errno = errno;
    ssize_t n;

    socksify_init();
    n = socksify_sendto(fd, buf, len, flags, addr, addrlen);
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    errno = saved_errno;
    return n;
}
