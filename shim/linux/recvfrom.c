/* The recvfrom() hook (and glibc's fortified __recvfrom_chk()): on a carried socket
 * (carry.h) the envelope is stripped and the real remote reported as the source. */

/* glibc declares recvfrom() with a transparent-union argument under _GNU_SOURCE; this
 * file defines it with the plain POSIX prototype, so it is built without _GNU_SOURCE. */
#undef _GNU_SOURCE
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "carried.h"
#include "carry.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
                                 struct sockaddr *addr, socklen_t *addrlen)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (socksify_carried_maybe(fd)) {
        n = socksify_carry_recv(fd, buf, len, flags, addr, addrlen, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(recvfrom)(fd, buf, len, flags, addr, addrlen);
}

SOCKSIFY_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen,
                                       int flags, struct sockaddr *addr,
                                       socklen_t *addrlen)
{
    if (len > buflen || !socksify_carried_maybe(fd))
        return SOCKSIFY_REAL_HOT(recvfrom_chk)(fd, buf, len, buflen, flags, addr, addrlen);
    return recvfrom(fd, buf, len, flags, addr, addrlen);
}
