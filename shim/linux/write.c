/* The write() hook: write() on a UDP socket connect()ed to a carried destination
 * (carry.h) is send() with no flags, enveloped; every other descriptor goes straight
 * to libc with no system call of the shim's. */
#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

#include "carried.h"
#include "carry.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (socksify_carried_maybe(fd)) {
        socksify_init();
        n = socksify_carry_send_one(fd, buf, len, 0, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(write)(fd, buf, len);
}
