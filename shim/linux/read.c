/* The read() hook (and glibc's fortified __read_chk()): read() on a carried socket
 * (carry.h) is recv() with no flags, its envelope stripped; every other descriptor
 * (files, pipes, TCP sockets...) goes straight to libc with no system call of the
 * shim's. */
#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

#include "carried.h"
#include "carry.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (socksify_carried_maybe(fd)) {
        n = socksify_carry_recv(fd, buf, len, 0, NULL, NULL, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(read)(fd, buf, len);
}

SOCKSIFY_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    if (len > buflen || !socksify_carried_maybe(fd))
        return SOCKSIFY_REAL_HOT(read_chk)(fd, buf, len, buflen);  /* aborts if too long */
    return read(fd, buf, len);
}
