/* A program that resolves and connects on its own, as a static or raw-syscall program
 * does: it reads the first "nameserver" of /etc/resolv.conf, sends its own DNS query
 * (A, over UDP, built here: no libc resolver) for NAME, and if an address comes back,
 * connects to it with syscall(SYS_connect) on PORT and sends an HTTP/1.0 GET for PATH
 * with Host: NAME. Built static by the tests (cc -static).
 *
 * Usage: ownquery NAME PORT PATH [tcp]     (tcp: the query over TCP, RFC 1035 4.2.2
 *                                          framing, connected with syscall(SYS_connect))
 * Prints one line per step:
 *   server <address>
 *   dns <rcode> <address|->          (or "dns error <errno>" when no reply came)
 *   connect <errno>                  (0: connected)
 *   http <bytes received> <first line>
 * Exit status 0 when every step that ran succeeded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static int nameserver(char *out, size_t size)
{
    char line[256];
    FILE *f = fopen("/etc/resolv.conf", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char addr[64];
        if (sscanf(line, " nameserver %63s", addr) == 1) {
            snprintf(out, size, "%s", addr);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

/* A query for name, type A, class IN, RD set; returns its length or -1. */
static int build_query(const char *name, unsigned char *buf, size_t size, unsigned id)
{
    size_t n = 12, len = strlen(name);
    const char *p = name;

    if (len + 18 > size)
        return -1;
    memset(buf, 0, 12);
    buf[0] = id >> 8; buf[1] = id & 0xff;
    buf[2] = 0x01;               /* RD */
    buf[5] = 1;                  /* QDCOUNT */
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t label = dot ? (size_t)(dot - p) : strlen(p);
        if (label == 0 || label > 63)
            return -1;
        buf[n++] = (unsigned char)label;
        memcpy(buf + n, p, label);
        n += label;
        p += label;
        if (*p == '.')
            p++;
    }
    buf[n++] = 0;
    buf[n++] = 0; buf[n++] = 1;  /* A */
    buf[n++] = 0; buf[n++] = 1;  /* IN */
    return (int)n;
}

/* The first A record of a reply; 0 when there is one. */
static int first_a(const unsigned char *buf, int len, struct in_addr *out)
{
    int i = 12, qd = buf[4] << 8 | buf[5], an = buf[6] << 8 | buf[7];

    for (; qd > 0; qd--) {       /* skip the question(s) */
        while (i < len && buf[i] != 0) {
            if ((buf[i] & 0xc0) == 0xc0) { i++; break; }
            i += buf[i] + 1;
        }
        i += 5;
    }
    for (; an > 0 && i < len; an--) {
        int type, rdlen;
        if ((buf[i] & 0xc0) == 0xc0)
            i += 2;
        else {
            while (i < len && buf[i] != 0)
                i += buf[i] + 1;
            i++;
        }
        if (i + 10 > len)
            return -1;
        type = buf[i] << 8 | buf[i + 1];
        rdlen = buf[i + 8] << 8 | buf[i + 9];
        i += 10;
        if (i + rdlen > len)
            return -1;
        if (type == 1 && rdlen == 4) {
            memcpy(out, buf + i, 4);
            return 0;
        }
        i += rdlen;
    }
    return -1;
}

static void timeouts(int s)
{
    struct timeval tv = {3, 0};

    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* The reply's length, or -errno. */
static int query_udp(const struct sockaddr_in *ns, const unsigned char *q, int len,
                     unsigned char *answer, size_t size, int *s)
{
    int got;

    *s = socket(AF_INET, SOCK_DGRAM, 0);
    timeouts(*s);
    if (sendto(*s, q, (size_t)len, 0, (const struct sockaddr *)ns, sizeof *ns) < 0)
        return -errno;
    got = (int)recv(*s, answer, size, 0);
    return got < 0 ? -errno : got;
}

static int read_all(int s, unsigned char *buf, size_t n)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = read(s, buf + done, n - done);
        if (r <= 0)
            return r < 0 ? -errno : -EPROTO;
        done += (size_t)r;
    }
    return 0;
}

static int query_tcp(const struct sockaddr_in *ns, const unsigned char *q, int len,
                     unsigned char *answer, size_t size, int *s)
{
    unsigned char framed[2 + 512], head[2];
    int r;
    size_t n;

    *s = socket(AF_INET, SOCK_STREAM, 0);
    timeouts(*s);
    if (syscall(SYS_connect, *s, (const struct sockaddr *)ns, sizeof *ns) != 0)
        return -errno;
    framed[0] = (unsigned char)(len >> 8);
    framed[1] = (unsigned char)(len & 0xff);
    memcpy(framed + 2, q, (size_t)len);
    if (write(*s, framed, (size_t)len + 2) != len + 2)
        return -errno;
    if ((r = read_all(*s, head, 2)) < 0)
        return r;
    n = (size_t)(head[0] << 8 | head[1]);
    if (n > size)
        return -EMSGSIZE;
    if ((r = read_all(*s, answer, n)) < 0)
        return r;
    return (int)n;
}

int main(int argc, char **argv)
{
    char server[64], text[INET_ADDRSTRLEN], req[512], reply[4096], head[128];
    unsigned char query[512], answer[1500];
    struct sockaddr_in ns = {0}, to = {0};
    struct in_addr addr;
    int s, len, got, rcode, total = 0, n, tcp;

    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "tcp") == 0)) {
        fprintf(stderr, "usage: ownquery NAME PORT PATH [tcp]\n");
        return 2;
    }
    tcp = argc == 5;
    if (nameserver(server, sizeof server) != 0 || inet_pton(AF_INET, server, &ns.sin_addr) != 1) {
        fprintf(stderr, "no IPv4 nameserver in /etc/resolv.conf\n");
        return 2;
    }
    printf("server %s\n", server);
    ns.sin_family = AF_INET;
    ns.sin_port = htons(53);
    len = build_query(argv[1], query, sizeof query, (unsigned)getpid() & 0xffff);
    if (len < 0) {
        printf("dns error %d\n", EINVAL);
        return 1;
    }
    got = tcp ? query_tcp(&ns, query, len, answer, sizeof answer, &s)
              : query_udp(&ns, query, len, answer, sizeof answer, &s);
    if (got < 12) {
        printf("dns error %d\n", got < 0 ? -got : EPROTO);
        return 1;
    }
    close(s);
    rcode = answer[3] & 0x0f;
    if (rcode != 0 || first_a(answer, got, &addr) != 0) {
        printf("dns %d -\n", rcode);
        return 1;
    }
    inet_ntop(AF_INET, &addr, text, sizeof text);
    printf("dns %d %s\n", rcode, text);
    fflush(stdout);

    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)atoi(argv[2]));
    to.sin_addr = addr;
    s = socket(AF_INET, SOCK_STREAM, 0);
    timeouts(s);
    if (syscall(SYS_connect, s, (struct sockaddr *)&to, sizeof to) != 0) {
        printf("connect %d\n", errno);
        return 1;
    }
    printf("connect 0\n");
    n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n", argv[3],
                 argv[1], argv[2]);
    if (write(s, req, (size_t)n) != n) {
        printf("http error %d\n", errno);
        return 1;
    }
    head[0] = '\0';
    while ((n = (int)read(s, reply, sizeof reply)) > 0) {
        if (total == 0)
            snprintf(head, sizeof head, "%.*s", n, reply);
        total += n;
    }
    head[strcspn(head, "\r\n")] = '\0';
    printf("http %d %s\n", total, head);
    return total > 0 ? 0 : 1;
}
