/* The send() hook: send() on a UDP socket connect()ed to a carried destination
 * (carry.h) gets the envelope for that destination; any other descriptor goes straight
 * to libc. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "carried.h"
#include "carry.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (socksify_carried_maybe(fd)) {
        socksify_init();
        n = socksify_carry_send_one(fd, buf, len, flags, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(send)(fd, buf, len, flags);
}
