/* The sendmsg() hook: as sendto.c, with the destination in msg->msg_name; a carried
 * datagram's envelope goes before msg's iovecs. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "carry.h"
#include "connect.h"
#include "datagram.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

/* The hook's logic; returns the bytes sent or -errno. */
static ssize_t socksify_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct socksify_carry carry;
    struct msghdr plain;
    ssize_t n;
    int r, handled;

    if (msg == NULL)  /* the kernel's EFAULT */
        return socksify_real.sendmsg(fd, msg, flags) < 0 ? -errno : 0;
    r = socksify_send_check(fd, msg->msg_name, msg->msg_namelen, flags, &carry);
    if (r < 0)
        return r;
    if (r == SOCKSIFY_SEND_CARRY)
        return socksify_carry_send(fd, &carry, msg, flags, 0);
    if (msg->msg_name == NULL || msg->msg_namelen == 0) {
        n = socksify_carry_send_connected(fd, msg, flags, &handled);
        if (handled)
            return n;
    }
    if (r == SOCKSIFY_SEND_FASTOPEN) {
        if ((r = socksify_connect_checked(fd, msg->msg_name, msg->msg_namelen)) < 0)
            return r;
        plain = *msg;
        plain.msg_name = NULL;
        plain.msg_namelen = 0;
        msg = &plain;
        flags &= ~MSG_FASTOPEN;
    }
    n = socksify_real.sendmsg(fd, msg, flags);
    return n < 0 ? -errno : n;
}

SOCKSIFY_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    int saved_errno = errno;
    ssize_t n;

    socksify_init();
    n = socksify_sendmsg(fd, msg, flags);
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    errno = saved_errno;
    return n;
}
