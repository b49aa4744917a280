/* A UDP client of the C calls Python does not make (tests/integration/test_udp_shim.py):
 * on a socket connect()ed to HOST:PORT, each case sends a datagram by one call and
 * reads the echo by another, on the socket or on a copy of it made by dup(), fcntl()
 * F_DUPFD, __fcntl() F_DUPFD_CLOEXEC, __dup2() or dup3(); writev()/readv() and
 * preadv2()/pwritev2() at the offset -1 (their 64-bit-offset names too). One line per
 * case ("ok NAME" or "FAIL NAME: why"), then "N passed, M failed".
 *
 *   udpcopies HOST PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

int __dup2(int fd, int newfd);          /* glibc's other names, declared nowhere */
int __fcntl(int fd, int cmd, ...);

static int passed, failed;

static void result(const char *name, int ok, const char *why)
{
    if (ok) {
        passed++;
        printf("ok %s\n", name);
    } else {
        failed++;
        printf("FAIL %s: %s\n", name, why);
    }
}

/* Send "NAME" on out with writev (vec) or write, then read on in with readv (vec) or
 * read: the echo must be exactly NAME. */
static void echo(const char *name, int out, int in, int vec)
{
    char buf[128];
    size_t len = strlen(name);
    struct iovec o[2] = {{(void *)name, 2}, {(void *)(name + 2), len - 2}};
    struct iovec i[2] = {{buf, 3}, {buf + 3, sizeof buf - 3}};
    struct pollfd p = {in, POLLIN, 0};
    ssize_t n;

    n = vec ? writev(out, o, 2) : write(out, name, len);
    if (n != (ssize_t)len) {
        result(name, 0, n < 0 ? strerror(errno) : "short send");
        return;
    }
    if (poll(&p, 1, 10000) != 1) {
        result(name, 0, "no echo in 10 s");
        return;
    }
    n = vec ? readv(in, i, 2) : read(in, buf, sizeof buf);
    result(name, n == (ssize_t)len && memcmp(buf, name, len) == 0,
           n < 0 ? strerror(errno) : "the echo differs");
}

int main(int argc, char **argv)
{
    struct sockaddr_in to;
    int s, c;

    if (argc != 3)
        return 2;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1
        || (s = socket(AF_INET, SOCK_DGRAM, 0)) < 0
        || connect(s, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("udpcopies");
        return 2;
    }
    echo("writev-readv", s, s, 1);
    echo("write-then-readv", s, s, 0);

    c = dup(s);
    echo("dup-writev", c, c, 1);
    close(c);
    c = fcntl(s, F_DUPFD, 100);
    echo("fcntl-dupfd", c, c, 0);
    echo("fcntl-dupfd-sent-read-on-original", c, s, 0);
    close(c);
    c = __fcntl(s, F_DUPFD_CLOEXEC, 0);
    echo("__fcntl-dupfd-cloexec", c, c, 1);
    c = open("/dev/null", O_RDONLY);
    __dup2(s, c);
    echo("__dup2", c, c, 0);
    c = open("/dev/null", O_RDONLY);
    dup3(s, c, O_CLOEXEC);
    echo("dup3", c, c, 1);

    {   /* pwritev2/preadv2 at the offset -1, and their 64-bit-offset names */
        char buf[64];
        struct iovec o = {"v2", 2}, i = {buf, sizeof buf};
        struct pollfd p = {s, POLLIN, 0};
        ssize_t n = pwritev2(s, &o, 1, -1, 0);

        n = n == 2 && poll(&p, 1, 10000) == 1 ? preadv2(s, &i, 1, -1, RWF_NOWAIT) : -1;
        result("pwritev2-preadv2", n == 2 && memcmp(buf, "v2", 2) == 0, "no echo");
        o.iov_base = "v64";
        o.iov_len = 3;
        n = pwritev64v2(s, &o, 1, -1, 0);
        n = n == 3 && poll(&p, 1, 10000) == 1 ? preadv64v2(s, &i, 1, -1, 0) : -1;
        result("pwritev64v2-preadv64v2", n == 3 && memcmp(buf, "v64", 3) == 0, "no echo");
        n = pwritev2(s, &o, 1, 0, 0);
        result("pwritev2-at-an-offset", n < 0 && errno == ESPIPE, "not ESPIPE");
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
