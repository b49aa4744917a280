/* A program the shim cannot see into: built -static, it makes its network calls
 * with raw system calls (syscall(SYS_socket/SYS_connect/SYS_sendto)), never libc's
 * connect(). One line per step on stdout, errno as a number (0: success).
 *
 *   rawnet get HOST PORT PATH OUT     TCP (IPv4 or IPv6 by HOST's form), an HTTP/1.0
 *                                     GET; the body to OUT. Prints
 *                                     "connect E", "peer ADDR PORT", "status CODE",
 *                                     "body N" (or "read E" when reading failed)
 *   rawnet udp HOST PORT              one datagram: "sendto E"
 *   rawnet loop HOST PORT PATH SECONDS  "get" (body discarded) every 0.3 s for
 *                                     SECONDS: one line "T ok" or "T fail E" each,
 *                                     T the whole seconds since the start
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static socklen_t address(const char *host, int port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        return sizeof *a4;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        return sizeof *a6;
    }
    fprintf(stderr, "rawnet: bad address %s\n", host);
    exit(2);
}

/* -1 and errno in e on failure; the connected socket otherwise */
static int raw_connect(const char *host, int port, int *e)
{
    struct sockaddr_storage ss;
    socklen_t len = address(host, port, &ss);
    int s = (int)syscall(SYS_socket, ss.ss_family, SOCK_STREAM, 0);

    if (s < 0) {
        *e = errno;
        return -1;
    }
    alarm(20);
    if (syscall(SYS_connect, s, (struct sockaddr *)&ss, len) != 0) {
        *e = errno;
        alarm(0);
        close(s);
        return -1;
    }
    alarm(0);
    *e = 0;
    return s;
}

/* 0, or errno; the body (after the header) to out when out is not NULL */
static int get(const char *host, int port, const char *path, FILE *out, int verbose)
{
    char req[512], buf[65536], peer[INET6_ADDRSTRLEN] = "?";
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int e, s = raw_connect(host, port, &e), code = 0, in_body = 0;
    long body = 0;
    size_t have = 0;

    if (verbose)
        printf("connect %d\n", e);
    if (s < 0)
        return e;
    if (verbose && getpeername(s, (struct sockaddr *)&ss, &len) == 0) {
        void *a = ss.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        int p = ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port;
        inet_ntop(ss.ss_family, a, peer, sizeof peer);
        printf("peer %s %d\n", peer, ntohs(p));
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    alarm(30);
    if (syscall(SYS_sendto, s, req, strlen(req), 0, NULL, 0) < 0) {
        e = errno;
        goto failed;
    }
    for (;;) {
        ssize_t n = syscall(SYS_recvfrom, s, buf + have, sizeof buf - have, 0, NULL, NULL);
        if (n < 0) {
            e = errno;
            goto failed;
        }
        if (n == 0)
            break;
        if (in_body) {
            if (out)
                fwrite(buf, 1, (size_t)n, out);
            body += n;
            continue;
        }
        have += (size_t)n;
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (end == NULL) {
            if (have == sizeof buf)
                break;
            continue;
        }
        sscanf(buf, "HTTP/%*s %d", &code);
        in_body = 1;
        size_t head = (size_t)(end + 4 - buf);
        if (out)
            fwrite(end + 4, 1, have - head, out);
        body += (long)(have - head);
        have = 0;
    }
    alarm(0);
    close(s);
    if (verbose) {
        printf("status %d\n", code);
        printf("body %ld\n", body);
    }
    return code == 200 ? 0 : EPROTO;
failed:
    alarm(0);
    close(s);
    if (verbose)
        printf("read %d\n", e);
    return e;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 6 && strcmp(argv[1], "get") == 0) {
        FILE *out = fopen(argv[5], "wb");
        if (out == NULL) {
            perror(argv[5]);
            return 2;
        }
        int e = get(argv[2], atoi(argv[3]), argv[4], out, 1);
        fclose(out);
        return e == 0 ? 0 : 1;
    }
    if (argc == 4 && strcmp(argv[1], "udp") == 0) {
        struct sockaddr_storage ss;
        socklen_t len = address(argv[2], atoi(argv[3]), &ss);
        int s = (int)syscall(SYS_socket, ss.ss_family, SOCK_DGRAM, 0);
        long rc = syscall(SYS_sendto, s, "x", 1, 0, (struct sockaddr *)&ss, len);
        printf("sendto %d\n", rc < 0 ? errno : 0);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "loop") == 0) {
        time_t start = time(NULL);
        while (time(NULL) - start < atoi(argv[5])) {
            int e = get(argv[2], atoi(argv[3]), argv[4], NULL, 0);
            if (e == 0)
                printf("%ld ok\n", (long)(time(NULL) - start));
            else
                printf("%ld fail %d\n", (long)(time(NULL) - start), e);
            usleep(300000);
        }
        return 0;
    }
    fprintf(stderr, "usage: rawnet get HOST PORT PATH OUT | udp HOST PORT | "
            "loop HOST PORT PATH SECONDS\n");
    return 2;
}
