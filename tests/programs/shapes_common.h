/* Helpers shared by the small C programs the shape tests run under socksify
 * (tests/integration/test_shapes.py builds them with cc at test time).
 *
 * The data a program sends is a pattern both sides can compute: byte i of a stream with
 * seed s is (i * 31 + s + (i >> 11)) & 0xff. The far echo server answers
 * "<sha256 hex> <count>\n" after EOF; the test computes the expected line itself, so the
 * programs need no hash code. Every helper retries EINTR the way a careful program
 * does, and returns 0 or -errno. */
#ifndef SHAPES_COMMON_H
#define SHAPES_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static inline uint8_t pattern_byte(uint64_t i, unsigned seed)
{
    return (uint8_t)(i * 31 + seed + (i >> 11));
}

static inline int make_addr(const char *host, int port, struct sockaddr_in *a)
{
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -EINVAL;
}

/* Wait for a non-blocking (or interrupted) connect to finish: 0 or -SO_ERROR. */
static inline int finish_connect(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0, n;
    socklen_t len = sizeof err;

    for (;;) {
        n = poll(&p, 1, timeout_ms);
        if (n > 0)
            break;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

/* A blocking TCP connect to host:port: the fd, or -errno. */
static inline int tcp_connect(const char *host, int port)
{
    struct sockaddr_in a;
    int fd, r;

    if ((r = make_addr(host, port, &a)) < 0)
        return r;
    if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    return fd;
}

static inline int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd q = {.fd = fd, .events = POLLOUT};
            if (poll(&q, 1, 30000) == 0)
                return -ETIMEDOUT;
            continue;
        }
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send nbytes of the seed's pattern, shut down the sending side, read the reply until
 * EOF into reply (NUL-terminated, newline stripped). */
static inline int echo_exchange(int fd, uint64_t nbytes, unsigned seed, char *reply,
                                size_t replymax)
{
    uint8_t buf[16384];
    uint64_t off = 0;
    size_t got = 0;
    int r;

    while (off < nbytes) {
        size_t n = nbytes - off < sizeof buf ? (size_t)(nbytes - off) : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern_byte(off + i, seed);
        if ((r = write_all(fd, buf, n)) < 0)
            return r;
        off += n;
    }
    if (shutdown(fd, SHUT_WR) < 0)
        return -errno;
    for (;;) {
        ssize_t n;
        struct pollfd q = {.fd = fd, .events = POLLIN};

        n = recv(fd, reply + got, replymax - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (poll(&q, 1, 30000) == 0)
                return -ETIMEDOUT;
            continue;
        }
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
        if (got >= replymax - 1)
            break;
    }
    reply[got] = '\0';
    while (got > 0 && (reply[got - 1] == '\n' || reply[got - 1] == '\r'))
        reply[--got] = '\0';
    return 0;
}

/* Connect to host:port, exchange nbytes with the echo server: 0 or -errno. */
static inline int echo_once(const char *host, int port, uint64_t nbytes, unsigned seed,
                            char *reply, size_t replymax)
{
    int fd = tcp_connect(host, port), r;

    if (fd < 0)
        return fd;
    r = echo_exchange(fd, nbytes, seed, reply, replymax);
    close(fd);
    return r;
}

static inline const char *errname(int err)
{
    switch (err) {
    case 0: return "OK";
    case EINTR: return "EINTR";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EACCES: return "EACCES";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    case EINPROGRESS: return "EINPROGRESS";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EBADF: return "EBADF";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case EMFILE: return "EMFILE";
    default: return "E?";
    }
}

#endif
