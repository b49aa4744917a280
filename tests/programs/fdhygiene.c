/* The fds a program holds after many connects, blocking and non-blocking mixed.
 *
 *   fdhygiene N HOST PORT REFUSED_PORT NBYTES
 *
 * Lists /proc/self/fd ("fd N -> TARGET", before), then makes N connections, in turn:
 * blocking; O_NONBLOCK (poll for POLLOUT if EINPROGRESS) with getpeername(); blocking
 * with getpeername(); and one to REFUSED_PORT, where nothing listens (blocking or
 * O_NONBLOCK, alternately). Each successful one exchanges NBYTES with the echo server
 * (seed = i). Then the list again (after). Lines:
 *
 *   before fd N -> TARGET      ...
 *   c I rc ERRNAME reply REPLY
 *   after fd N -> TARGET       ...
 *
 * (TARGET "socksify-control": the shim's control connection.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sys/un.h>

#include "shapes_common.h"

/* The shim's control connection (kept between requests, docs/wire.md): a Unix socket
 * connected to .../control.sock. */
static int is_control(int fd)
{
    struct sockaddr_un peer;
    socklen_t len = sizeof peer;
    size_t n;

    memset(&peer, 0, sizeof peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0 || peer.sun_family != AF_UNIX)
        return 0;
    n = strnlen(peer.sun_path, sizeof peer.sun_path);
    return n >= 12 && memcmp(peer.sun_path + n - 12, "control.sock", 12) == 0;
}

static void list_fds(const char *when)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = dirfd(d);

    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        ssize_t n;

        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        if (is_control(atoi(e->d_name)))
            snprintf(target, sizeof target, "socksify-control");
        printf("%s fd %s -> %s\n", when, e->d_name, target);
    }
    closedir(d);
}

static int one(int i, const char *host, int port, int refused_port, uint64_t nbytes,
               char *reply, size_t replymax)
{
    int kind = i % 4, nonblock = kind == 1 || (kind == 3 && i % 8 == 3), fd, r = 0;
    struct sockaddr_in a, peer;
    socklen_t plen = sizeof peer;

    make_addr(host, kind == 3 ? refused_port : port, &a);
    fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        r = -errno;
        if (r == -EINPROGRESS)
            r = finish_connect(fd, 60000);
    }
    if (r == 0 && (kind == 1 || kind == 2)) {
        if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
            r = -errno;
        else if (peer.sin_port != a.sin_port || peer.sin_addr.s_addr != a.sin_addr.s_addr)
            r = -EPROTO;  /* the wrong peer (reported as E?) */
    }
    if (r == 0)
        r = echo_exchange(fd, nbytes, (unsigned)i, reply, replymax);
    close(fd);
    return r;
}

int main(int argc, char **argv)
{
    int n;

    if (argc != 6) {
        fprintf(stderr, "usage: %s N HOST PORT REFUSED_PORT NBYTES\n", argv[0]);
        return 2;
    }
    n = atoi(argv[1]);
    list_fds("before");
    for (int i = 0; i < n; i++) {
        char reply[256] = "";
        int r = one(i, argv[2], atoi(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10),
                    reply, sizeof reply);
        printf("c %d rc %s reply %s\n", i, errname(-r), reply[0] ? reply : "-");
    }
    fflush(stdout);
    list_fds("after");
    return 0;
}
