/* The sendmmsg() hook: as sendmsg.c for each message. The messages up to the first
 * refused one are sent and counted, as the kernel counts a partial batch; a refused
 * first message fails the call with its errno. MSG_FASTOPEN with a destination on a
 * stream socket is refused with EOPNOTSUPP (no program batches a TCP Fast Open). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "datagram.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

/* 1 if messages a and b have the same destination bytes. */
static int same_dest(const struct msghdr *a, const struct msghdr *b)
{
    return a->msg_namelen == b->msg_namelen
        && (a->msg_name == b->msg_name
            || (a->msg_name != NULL && b->msg_name != NULL
                && memcmp(a->msg_name, b->msg_name, a->msg_namelen) == 0));
}

/* The hook's logic; returns the messages sent or -errno. */
static int socksify_sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
    const struct msghdr *allowed = NULL;  /* the last destination checked */
    unsigned i;
    int n, r;

    for (i = 0; vec != NULL && i < vlen; i++) {
        const struct msghdr *m = &vec[i].msg_hdr;

        if (allowed != NULL && same_dest(m, allowed))
            continue;  /* a batch to one address is asked about once */
        r = socksify_send_check(fd, m->msg_name, m->msg_namelen, flags);
        if (r == SOCKSIFY_SEND_FASTOPEN)
            r = -EOPNOTSUPP;
        if (r < 0) {
            if (i == 0)
                return r;
            vlen = i;  /* send what came before the refused message */
            break;
        }
        allowed = m;
    }
    n = socksify_real.sendmmsg(fd, vec, vlen, flags);
    return n < 0 ? -errno : n;
}

SOCKSIFY_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
    int saved_errno = errno, n;

    socksify_init();
    n = socksify_sendmmsg(fd, vec, vlen, flags);
    if (n < 0) {
        errno = -n;
        return -1;
    }
    errno = saved_errno;
    return n;
}
