/* The sendmmsg() hook: as sendmsg.c for each message. The messages up to the first
 * refused one are sent and counted, as the kernel counts a partial batch; a refused
 * first message fails the call with its errno. MSG_FASTOPEN with a destination on a
 * stream socket is refused with EOPNOTSUPP (no program batches a TCP Fast Open). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "carry.h"
#include "carried.h"
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

/* A batch with carried datagrams: each message sent on its own (enveloped or not), up
 * to the first that fails; returns the messages sent or the first one's -errno. */
static int send_each(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
    struct socksify_carry carry;
    unsigned i;
    ssize_t n;
    int r, handled;

    for (i = 0; i < vlen; i++) {
        struct msghdr *m = &vec[i].msg_hdr;

        r = socksify_send_check(fd, m->msg_name, m->msg_namelen, flags, &carry);
        if (r == SOCKSIFY_SEND_FASTOPEN)
            r = -EOPNOTSUPP;
        handled = 1;
        n = r;
        if (r == SOCKSIFY_SEND_CARRY)
            n = socksify_carry_send(fd, &carry, m, flags, 0);
        else if (r >= 0 && (m->msg_name == NULL || m->msg_namelen == 0))
            n = socksify_carry_send_connected(fd, m, flags, &handled);
        else if (r >= 0)
            handled = 0;
        if (!handled) {
            n = socksify_real.sendmsg(fd, m, flags);
            if (n < 0)
                n = -errno;
        }
        if (n < 0)
            return i == 0 ? (int)n : (int)i;
        vec[i].msg_len = (unsigned)n;
    }
    return (int)i;
}

/* The hook's logic; returns the messages sent or -errno. */
static int socksify_sendmmsg(int fd, struct mmsghdr *vec, unsigned vlen, int flags)
{
    const struct msghdr *allowed = NULL;  /* the last destination checked */
    struct socksify_carry carry;
    unsigned i;
    int n, r;

    if (vec != NULL && socksify_carried_maybe(fd))
        return send_each(fd, vec, vlen, flags);
    for (i = 0; vec != NULL && i < vlen; i++) {
        const struct msghdr *m = &vec[i].msg_hdr;

        if (allowed != NULL && same_dest(m, allowed))
            continue;  /* a batch to one address is asked about once */
        r = socksify_send_check(fd, m->msg_name, m->msg_namelen, flags, &carry);
        if (r == SOCKSIFY_SEND_CARRY)
            return send_each(fd, vec, vlen, flags);
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
