/* The recvmsg() hook: on a carried socket (carry.h) the datagram is read into
 * [envelope, the program's iovecs], the envelope stripped and the real remote written
 * to msg_name. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "carried.h"
#include "carry.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    int saved_errno = errno, handled = 0;
    ssize_t n;

    if (msg != NULL && socksify_carried_maybe(fd)) {
        n = socksify_carry_recvmsg(fd, msg, flags, &handled);
        if (handled) {
            if (n < 0) {
                errno = (int)-n;
                return -1;
            }
            errno = saved_errno;
            return n;
        }
    }
    return SOCKSIFY_REAL_HOT(recvmsg)(fd, msg, flags);
}
