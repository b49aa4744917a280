/* UNWRAP before the last copy of a handed-off socket closes (unwrap.h). */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "carried.h"
#include "config.h"
#include "control.h"
#include "log.h"
#include "unwrap.h"

void socksify_unwrap_closing(int fd)
{
    struct socksify_carried e;
    struct socksify_connect_req req;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int saved_errno = errno, r;

    /* a forked child's copy (the entry says another pid asked) never ends its parent's
     * association; nor does a copy while another descriptor holds the socket */
    if (socksify_carried_get(fd, &e) < 0 || e.nwraps == 0 || e.wrap_pid != getpid()
        || socksify_carried_copies(fd) > 0)
        goto out;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0
        || socksify_addr_fill_request((struct sockaddr *)&ss, len, SOCKSIFY_SOCKTYPE_DGRAM,
                                      socksify_config()->session, &req) < 0)
        goto out;
    if ((r = socksify_control_unwrap(&req, fd)) < 0)
        LOG_DEBUG("fd %d: UNWRAP: %s (the daemon ends the association when this "
                  "process exits)", fd, socksify_strerror(-r));
    socksify_carried_forget(fd);
out:
    errno = saved_errno;
}

void socksify_unwrap_closing_range(unsigned lo, unsigned hi)
{
    int fds[SOCKSIFY_CARRIED_SLOTS];
    int n = socksify_carried_in_range(lo, hi, fds, SOCKSIFY_CARRIED_SLOTS);

    for (int i = 0; i < n; i++)
        socksify_unwrap_closing(fds[i]);
}
