/* The recv() hook (and glibc's fortified __recv_chk()): on a carried socket (carry.h)
 * the envelope is stripped; every other descriptor goes straight to libc, with no
 * system call of the shim's. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "carried.h"
#include "carry.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (socksify_carried_maybe(fd)) {
        n = socksify_carry_recv(fd, buf, len, flags, NULL, NULL, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(recv)(fd, buf, len, flags);
}

SOCKSIFY_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen || !socksify_carried_maybe(fd))
        return SOCKSIFY_REAL_HOT(recv_chk)(fd, buf, len, buflen, flags);  /* aborts */
    return recv(fd, buf, len, flags);
}
