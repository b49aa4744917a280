/* I/O helpers with deadlines (see io.h). */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "io.h"
#include "real.h"

int64_t socksify_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int socksify_wait_fd(int fd, short events, int64_t deadline_ms)
{
    struct pollfd pfd = {.fd = fd, .events = events};

    for (;;) {
        int64_t left = deadline_ms - socksify_now_ms();
        int n;

        if (left <= 0)
            return -ETIMEDOUT;
        n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 0;  /* ready, or POLLERR/POLLHUP: the next call reports it */
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

int socksify_send_all(int fd, const void *buf, size_t len, int64_t deadline_ms)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = socksify_real.send(fd, p, len, MSG_NOSIGNAL);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = socksify_wait_fd(fd, POLLOUT, deadline_ms);
            if (r < 0)
                return r;
        } else if (n < 0 && errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int socksify_socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}
