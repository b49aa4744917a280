/* Sends and connects the shim must judge by what the kernel does with them: AF_UNSPEC
 * destinations (udp_sendmsg() and raw_sendmsg() read them as AF_INET), AF_INET and
 * IPv4-mapped destinations on AF_INET6 UDP sockets, and socket kinds the daemon cannot
 * carry (raw, ICMP "ping", SCTP, DCCP, SEQPACKET), plus an MPTCP connect.
 *
 *   socketkinds MARKER HOST UDP_PORT TCP_PORT
 *
 * Every datagram carries "MARKER CASE". One line per case:
 *
 *   CASE sent|ERRNO_NAME|nosocket:ERRNO_NAME
 *
 * With HOST 127.0.0.1 the program binds its own UDP sink there (UDP_PORT is ignored),
 * runs the loopback cases only and ends with "received N" (datagrams its sink got). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef SOCK_DCCP
#define SOCK_DCCP 6
#endif
#define PROTO_TEST 253  /* RFC 3692: for experimentation and testing */

static const char *marker, *host;
static int udp_port, tcp_port;

static void report(const char *name, long rc)
{
    const char *e = strerrorname_np(errno);

    printf("%s %s\n", name, rc >= 0 ? "sent" : e != NULL ? e : "E?");
    fflush(stdout);
}

static int open_socket(const char *name, int domain, int type, int protocol)
{
    int fd = socket(domain, type, protocol);

    if (fd < 0) {
        const char *e = strerrorname_np(errno);
        printf("%s nosocket:%s\n", name, e != NULL ? e : "E?");
        fflush(stdout);
    }
    return fd;
}

static struct sockaddr_in in4(int family, int port)
{
    struct sockaddr_in a;

    memset(&a, 0, sizeof a);
    a.sin_family = (sa_family_t)family;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 mapped6(int port)
{
    struct sockaddr_in6 a;
    char text[64];

    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    snprintf(text, sizeof text, "::ffff:%s", host);
    inet_pton(AF_INET6, text, &a.sin6_addr);
    return a;
}

/* The payload: an ICMP echo request header first when icmp is set (the kernel fills in
 * the identifier and checksum of a ping socket's request). */
static size_t payload(char *buf, size_t len, const char *name, int icmp)
{
    size_t off = 0;

    if (icmp) {
        memset(buf, 0, 8);
        buf[0] = 8;  /* ICMP_ECHO */
        off = 8;
    }
    return off + (size_t)snprintf(buf + off, len - off, "%s %s", marker, name);
}

static void try_sendto(const char *name, int domain, int type, int protocol,
                       const void *to, socklen_t tolen)
{
    char buf[256];
    size_t n = payload(buf, sizeof buf, name, protocol == IPPROTO_ICMP);
    int fd = open_socket(name, domain, type, protocol);

    if (fd < 0)
        return;
    report(name, sendto(fd, buf, n, 0, to, tolen));
    close(fd);
}

static void try_sendmsg(const char *name, int domain, int type, int protocol,
                        const void *to, socklen_t tolen)
{
    char buf[256];
    struct iovec iov = {buf, payload(buf, sizeof buf, name, 0)};
    struct msghdr m = {.msg_name = (void *)to, .msg_namelen = tolen, .msg_iov = &iov,
                       .msg_iovlen = 1};
    int fd = open_socket(name, domain, type, protocol);

    if (fd < 0)
        return;
    report(name, sendmsg(fd, &m, 0));
    close(fd);
}

static void try_sendmmsg(const char *name, int domain, int type, int protocol,
                         const void *to, socklen_t tolen)
{
    char buf[256];
    struct iovec iov = {buf, payload(buf, sizeof buf, name, 0)};
    struct mmsghdr v[2];
    int fd = open_socket(name, domain, type, protocol), n;

    if (fd < 0)
        return;
    memset(v, 0, sizeof v);
    for (int i = 0; i < 2; i++) {
        v[i].msg_hdr.msg_name = (void *)to;
        v[i].msg_hdr.msg_namelen = tolen;
        v[i].msg_hdr.msg_iov = &iov;
        v[i].msg_hdr.msg_iovlen = 1;
    }
    n = sendmmsg(fd, v, 2, 0);
    report(name, n == 2 ? 0 : n < 0 ? -1 : (errno = EMSGSIZE, -1));
    close(fd);
}

/* connect(), then a send without an address if it was let through. */
static void try_connect(const char *name, int domain, int type, int protocol,
                        const void *to, socklen_t tolen)
{
    char buf[256];
    size_t n = payload(buf, sizeof buf, name, protocol == IPPROTO_ICMP);
    int fd = open_socket(name, domain, type, protocol);
    long rc;

    if (fd < 0)
        return;
    rc = connect(fd, to, tolen);
    if (rc == 0)
        rc = send(fd, buf, n, MSG_NOSIGNAL);
    report(name, rc);
    close(fd);
}

static void loopback_cases(void)
{
    struct sockaddr_in sink = in4(AF_INET, 0), u4;
    struct sockaddr_in6 m6;
    socklen_t len = sizeof sink;
    int s = socket(AF_INET, SOCK_DGRAM, 0), got = 0;
    char buf[512];

    if (s < 0 || bind(s, (struct sockaddr *)&sink, sizeof sink) < 0
        || getsockname(s, (struct sockaddr *)&sink, &len) < 0) {
        perror("loopback sink");
        exit(2);
    }
    u4 = in4(AF_UNSPEC, ntohs(sink.sin_port));
    m6 = mapped6(ntohs(sink.sin_port));
    try_sendto("udp4-sendto-unspec", AF_INET, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendmsg("udp4-sendmsg-unspec", AF_INET, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendto("udp6-sendto-mapped", AF_INET6, SOCK_DGRAM, 0, &m6, sizeof m6);
    u4.sin_family = AF_INET;
    try_sendto("udp6-sendto-inet", AF_INET6, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendto("raw4-sendto-inet", AF_INET, SOCK_RAW, PROTO_TEST, &u4, sizeof u4);
    for (;;) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 1000) != 1 || recv(s, buf, sizeof buf, 0) < 0)
            break;
        got++;
    }
    printf("received %d\n", got);
}

int main(int argc, char **argv)
{
    struct sockaddr_in u4, i4, t4;
    struct sockaddr_in6 m6, tm6;

    if (argc != 5) {
        fprintf(stderr, "usage: %s MARKER HOST UDP_PORT TCP_PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    marker = argv[1], host = argv[2], udp_port = atoi(argv[3]), tcp_port = atoi(argv[4]);
    if (strcmp(host, "127.0.0.1") == 0) {
        loopback_cases();
        return 0;
    }
    u4 = in4(AF_UNSPEC, udp_port);
    i4 = in4(AF_INET, udp_port);
    t4 = in4(AF_INET, tcp_port);
    m6 = mapped6(udp_port);
    tm6 = mapped6(tcp_port);

    /* UDP and UDP-Lite: AF_UNSPEC is AF_INET to the kernel */
    try_sendto("udp4-sendto-unspec", AF_INET, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendmsg("udp4-sendmsg-unspec", AF_INET, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendmmsg("udp4-sendmmsg-unspec", AF_INET, SOCK_DGRAM, 0, &u4, sizeof u4);
    try_sendto("udplite4-sendto-unspec", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE, &u4,
               sizeof u4);
    /* AF_INET6 UDP sockets: an AF_INET or v4-mapped destination goes out over IPv4 */
    try_sendto("udp6-sendto-inet", AF_INET6, SOCK_DGRAM, 0, &i4, sizeof i4);
    try_sendmsg("udp6-sendmsg-inet", AF_INET6, SOCK_DGRAM, 0, &i4, sizeof i4);
    try_sendto("udp6-sendto-mapped", AF_INET6, SOCK_DGRAM, 0, &m6, sizeof m6);
    try_sendmmsg("udp6-sendmmsg-mapped", AF_INET6, SOCK_DGRAM, 0, &m6, sizeof m6);
    try_connect("udp6-connect-inet", AF_INET6, SOCK_DGRAM, 0, &i4, sizeof i4);
    /* raw IP (needs CAP_NET_RAW) and ICMP "ping" sockets */
    try_sendto("raw4-sendto-unspec", AF_INET, SOCK_RAW, PROTO_TEST, &u4, sizeof u4);
    try_sendto("raw4-sendto-inet", AF_INET, SOCK_RAW, PROTO_TEST, &i4, sizeof i4);
    try_sendmsg("raw4-sendmsg-unspec", AF_INET, SOCK_RAW, PROTO_TEST, &u4, sizeof u4);
    try_connect("raw4-connect-inet", AF_INET, SOCK_RAW, PROTO_TEST, &i4, sizeof i4);
    try_sendto("ping4-sendto-inet", AF_INET, SOCK_DGRAM, IPPROTO_ICMP, &i4, sizeof i4);
    try_connect("ping4-connect-inet", AF_INET, SOCK_DGRAM, IPPROTO_ICMP, &i4, sizeof i4);
    /* kinds this kernel may lack: socket() says so ("nosocket:") */
    try_connect("sctp4-stream-connect", AF_INET, SOCK_STREAM, IPPROTO_SCTP, &t4, sizeof t4);
    try_connect("sctp6-stream-connect-mapped", AF_INET6, SOCK_STREAM, IPPROTO_SCTP, &tm6,
                sizeof tm6);
    try_sendto("sctp4-seqpacket-sendto", AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP, &t4,
               sizeof t4);
    try_connect("dccp4-connect", AF_INET, SOCK_DCCP, IPPROTO_DCCP, &t4, sizeof t4);
    try_connect("seqpacket4-connect", AF_INET, SOCK_SEQPACKET, 0, &t4, sizeof t4);
    /* MPTCP: a TCP connection to hop 1, carried through the chain like TCP */
    try_connect("mptcp4-connect", AF_INET, SOCK_STREAM, IPPROTO_MPTCP, &t4, sizeof t4);
    return 0;
}
