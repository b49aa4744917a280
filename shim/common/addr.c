/* Pure helpers on socket addresses (see addr.h). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#endif

#include "addr.h"

/* Bytes an IPv6 address needs to reach the end of sin6_addr: Linux accepts such
 * addresses (without sin6_scope_id) in connect(). */
#define IN6_MIN_LEN (offsetof(struct sockaddr_in6, sin6_addr) + sizeof(struct in6_addr))

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int socksify_addr_family(const struct sockaddr *sa, unsigned len)
{
    sa_family_t family;

    if (sa == NULL || len < sizeof(sa_family_t))
        return 0;
    memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family), sizeof family);
    if (family == AF_INET && len >= sizeof(struct sockaddr_in))
        return AF_INET;
    if (family == AF_INET6 && len >= IN6_MIN_LEN)
        return AF_INET6;
    return 0;
}

int socksify_addr_unmap_v4(const uint8_t a6[16], uint8_t v4[4])
{
    if (memcmp(a6, v4_mapped_prefix, sizeof v4_mapped_prefix) != 0)
        return 0;
    memcpy(v4, a6 + 12, 4);
    return 1;
}

/* 127.0.0.0/8 or 0.0.0.0 (which connect() takes to mean this host). */
static int v4_is_local(const uint8_t a[4])
{
    return a[0] == 127 || (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0);
}

SOCKSIFY_EXPORT int socksify_addr_is_loopback(const struct sockaddr *sa, unsigned len)
{
    static const uint8_t any6[16] = {0};
    static const uint8_t loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t a[16], v4[4];

    switch (socksify_addr_family(sa, len)) {
    case AF_INET:
        memcpy(a, (const char *)sa + offsetof(struct sockaddr_in, sin_addr), 4);
        return v4_is_local(a);
    case AF_INET6:
        memcpy(a, (const char *)sa + offsetof(struct sockaddr_in6, sin6_addr), 16);
        if (memcmp(a, any6, 16) == 0 || memcmp(a, loop6, 16) == 0)
            return 1;
        return socksify_addr_unmap_v4(a, v4) && v4_is_local(v4);
    default:
        return 0;
    }
}

int socksify_addr_fill_request(const struct sockaddr *sa, unsigned len, uint8_t socktype,
                               const uint8_t session[SOCKSIFY_SESSION_SIZE],
                               struct socksify_connect_req *req)
{
    uint16_t port_be;
    uint8_t a6[16];

    memset(req, 0, sizeof *req);
    switch (socksify_addr_family(sa, len)) {
    case AF_INET:
        req->family = SOCKSIFY_FAMILY_INET;
        memcpy(&port_be, (const char *)sa + offsetof(struct sockaddr_in, sin_port), 2);
        memcpy(req->addr, (const char *)sa + offsetof(struct sockaddr_in, sin_addr), 4);
        break;
    case AF_INET6:
        memcpy(&port_be, (const char *)sa + offsetof(struct sockaddr_in6, sin6_port), 2);
        memcpy(a6, (const char *)sa + offsetof(struct sockaddr_in6, sin6_addr), 16);
        if (socksify_addr_unmap_v4(a6, req->addr)) {
            req->family = SOCKSIFY_FAMILY_INET;
        } else {
            req->family = SOCKSIFY_FAMILY_INET6;
            memcpy(req->addr, a6, 16);
        }
        break;
    default:
        return -EAFNOSUPPORT;
    }
    req->port = ntohs(port_be);
    req->socktype = socktype;
    memcpy(req->session, session, SOCKSIFY_SESSION_SIZE);
    return 0;
}

void socksify_addr_format(const struct socksify_connect_req *req, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int v6 = req->family == SOCKSIFY_FAMILY_INET6;

    inet_ntop(v6 ? AF_INET6 : AF_INET, req->addr, host, sizeof host);
    snprintf(buf, len, v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)req->port);
}

int socksify_addr_relay(int domain, const struct socksify_reply *rep,
                        struct sockaddr_storage *out, socklen_t *outlen)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

    memset(out, 0, sizeof *out);
    if (domain == AF_INET) {
        if (rep->relay_port4 == 0)
            return -EPROTO;
        in4->sin_family = AF_INET;
        in4->sin_port = htons(rep->relay_port4);
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *outlen = sizeof *in4;
        return 0;
    }
    if (domain == AF_INET6) {
        in6->sin6_family = AF_INET6;
        if (rep->relay_port6 != 0) {
            in6->sin6_port = htons(rep->relay_port6);
            in6->sin6_addr.s6_addr[15] = 1;  /* ::1 */
        } else if (rep->relay_port4 != 0) {
            in6->sin6_port = htons(rep->relay_port4);
            memcpy(in6->sin6_addr.s6_addr, v4_mapped_prefix, sizeof v4_mapped_prefix);
            in6->sin6_addr.s6_addr[12] = 127;
            in6->sin6_addr.s6_addr[15] = 1;
        } else {
            return -EPROTO;
        }
        *outlen = sizeof *in6;
        return 0;
    }
    return -EAFNOSUPPORT;
}

int socksify_addr_of_peer(int domain, const struct socksify_peer *peer,
                          struct sockaddr_storage *out, socklen_t *outlen)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

    memset(out, 0, sizeof *out);
    if (domain == AF_INET && peer->family == SOCKSIFY_FAMILY_INET) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(peer->port);
        memcpy(&in4->sin_addr, peer->addr, 4);
        *outlen = sizeof *in4;
        return 0;
    }
    if (domain == AF_INET6) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(peer->port);
        if (peer->family == SOCKSIFY_FAMILY_INET) {
            memcpy(in6->sin6_addr.s6_addr, v4_mapped_prefix, sizeof v4_mapped_prefix);
            memcpy(in6->sin6_addr.s6_addr + 12, peer->addr, 4);
        } else {
            memcpy(in6->sin6_addr.s6_addr, peer->addr, 16);
        }
        *outlen = sizeof *in6;
        return 0;
    }
    return -EAFNOSUPPORT;
}

int socksify_sock_kind(int domain, int type, int protocol)
{
    if (domain != AF_INET && domain != AF_INET6)
        return SOCKSIFY_KIND_NOT_IP;
    if (type == SOCK_STREAM
        && (protocol == 0 || protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP))
        return SOCKSIFY_KIND_STREAM;
    if (type == SOCK_DGRAM
        && (protocol == 0 || protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE))
        return SOCKSIFY_KIND_DGRAM;
    return SOCKSIFY_KIND_OTHER;
}

int socksify_addr_dest(int domain, int op, const struct sockaddr *sa, unsigned len,
                       struct sockaddr_storage *out, unsigned *outlen)
{
    sa_family_t family;

    if (sa == NULL || len == 0)
        return SOCKSIFY_DEST_NONE;
    if (len < sizeof(sa_family_t))
        return SOCKSIFY_DEST_UNKNOWN;
    memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family), sizeof family);
    if (family == AF_UNSPEC) {
        if (op == SOCKSIFY_DEST_CONNECT || domain == AF_INET6)
            return SOCKSIFY_DEST_NONE;
        if (domain != AF_INET || len < sizeof(struct sockaddr_in))
            return SOCKSIFY_DEST_UNKNOWN;
        family = AF_INET;  /* udp_sendmsg(), raw_sendmsg(): AF_UNSPEC is AF_INET */
    }
    memset(out, 0, sizeof *out);
    if (family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        memcpy(out, sa, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)out)->sin_family = AF_INET;
        *outlen = sizeof(struct sockaddr_in);
        return SOCKSIFY_DEST_ADDR;
    }
    if (family == AF_INET6 && len >= IN6_MIN_LEN) {
        *outlen = len < sizeof(struct sockaddr_in6) ? len : sizeof(struct sockaddr_in6);
        memcpy(out, sa, *outlen);
        return SOCKSIFY_DEST_ADDR;
    }
    return SOCKSIFY_DEST_UNKNOWN;
}
