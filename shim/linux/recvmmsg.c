/* The recvmmsg() hook: on a carried socket (carry.h) each message is read as recvmsg()
 * reads one, the first as asked and the rest without waiting (MSG_DONTWAIT), as the
 * kernel fills a batch from what is queued; the timeout is not applied there. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "carried.h"
#include "carry.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags,
                             struct timespec *timeout)
{
    int saved_errno = errno, handled = 0;
    unsigned i;
    ssize_t n;

    if (vec == NULL || vlen == 0 || !socksify_carried_maybe(fd))
        return SOCKSIFY_REAL_HOT(recvmmsg)(fd, vec, vlen, flags, timeout);
    for (i = 0; i < vlen; i++) {
        int f = (flags & ~MSG_WAITFORONE) | (i > 0 ? MSG_DONTWAIT : 0);
        n = socksify_carry_recvmsg(fd, &vec[i].msg_hdr, f, &handled);
        if (!handled)
            return SOCKSIFY_REAL_HOT(recvmmsg)(fd, vec, vlen, flags, timeout);
        if (n < 0) {
            if (i > 0)
                break;  /* the messages read so far are the answer */
            errno = (int)-n;
            return -1;
        }
        vec[i].msg_len = (unsigned)n;
    }
    errno = saved_errno;
    return (int)i;
}
