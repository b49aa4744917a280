/* C tests of how the shim reads a socket's kind and a destination as the kernel does
 * (shim/common/addr.c: socksify_sock_kind(), socksify_addr_dest()). They cover kinds
 * the test machine's kernel may lack (SCTP, DCCP, IPv4 SEQPACKET), which the lab tests
 * cannot create.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common tests/c/test_kinds.c shim/common/addr.c shim/common/wire.c
 *   ./a.out
 *
 * Every entry of the tables below is one case (tests/unit/test_shim_c.py checks the
 * passed count against their sizes). The last line is "N passed, M failed".
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "vectors.h"

/* Socket kinds: 16 entries. */
static void run_kinds(void)
{
    static const struct { const char *name; int domain, type, protocol, want; } cases[] = {
        {"tcp4", AF_INET, SOCK_STREAM, 0, SOCKSIFY_KIND_STREAM},
        {"tcp6", AF_INET6, SOCK_STREAM, IPPROTO_TCP, SOCKSIFY_KIND_STREAM},
        {"mptcp4", AF_INET, SOCK_STREAM, 262, SOCKSIFY_KIND_STREAM},
        {"udp4", AF_INET, SOCK_DGRAM, 0, SOCKSIFY_KIND_DGRAM},
        {"udp6", AF_INET6, SOCK_DGRAM, IPPROTO_UDP, SOCKSIFY_KIND_DGRAM},
        {"udplite4", AF_INET, SOCK_DGRAM, 136, SOCKSIFY_KIND_DGRAM},
        {"sctp4-stream", AF_INET, SOCK_STREAM, 132, SOCKSIFY_KIND_OTHER},
        {"sctp6-seqpacket", AF_INET6, SOCK_SEQPACKET, 132, SOCKSIFY_KIND_OTHER},
        {"dccp4", AF_INET, 6, 33, SOCKSIFY_KIND_OTHER},
        {"seqpacket4", AF_INET, SOCK_SEQPACKET, 0, SOCKSIFY_KIND_OTHER},
        {"rdm4", AF_INET, SOCK_RDM, 0, SOCKSIFY_KIND_OTHER},
        {"raw4", AF_INET, SOCK_RAW, 253, SOCKSIFY_KIND_OTHER},
        {"ping4", AF_INET, SOCK_DGRAM, IPPROTO_ICMP, SOCKSIFY_KIND_OTHER},
        {"ping6", AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6, SOCKSIFY_KIND_OTHER},
        {"l2tp4", AF_INET, SOCK_DGRAM, 115, SOCKSIFY_KIND_OTHER},
        {"unix", AF_UNIX, SOCK_DGRAM, 0, SOCKSIFY_KIND_NOT_IP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        result(socksify_sock_kind(cases[i].domain, cases[i].type, cases[i].protocol)
               == cases[i].want, "kind", cases[i].name, NULL);
}

/* Destinations: 15 entries. want_family is the family of *out for DEST_ADDR. */
static void run_dests(void)
{
    struct sockaddr_in v4 = {0}, unspec;
    struct sockaddr_in6 v6 = {0}, mapped = {0};
    struct sockaddr other = {0};
    static const char *ops[] = {"send", "connect"};

    v4.sin_family = AF_INET;
    v4.sin_port = htons(53);
    inet_pton(AF_INET, "10.77.1.2", &v4.sin_addr);
    unspec = v4;
    unspec.sin_family = AF_UNSPEC;
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::1", &v6.sin6_addr);
    mapped.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.77.1.2", &mapped.sin6_addr);
    other.sa_family = AF_UNIX;
    const struct {
        const char *name;
        int domain, op;
        const void *sa;
        unsigned len;
        int want, want_family;
    } cases[] = {
        {"null", AF_INET, 0, NULL, 16, SOCKSIFY_DEST_NONE, 0},
        {"len0", AF_INET, 0, &v4, 0, SOCKSIFY_DEST_NONE, 0},
        {"len1", AF_INET, 0, &v4, 1, SOCKSIFY_DEST_UNKNOWN, 0},
        {"v4-on-4", AF_INET, 0, &v4, sizeof v4, SOCKSIFY_DEST_ADDR, AF_INET},
        {"v4-short", AF_INET, 0, &v4, sizeof v4 - 1, SOCKSIFY_DEST_UNKNOWN, 0},
        {"unspec-send-on-4", AF_INET, 0, &unspec, sizeof unspec, SOCKSIFY_DEST_ADDR,
         AF_INET},
        {"unspec-send-on-4-short", AF_INET, 0, &unspec, 8, SOCKSIFY_DEST_UNKNOWN, 0},
        {"unspec-connect-on-4", AF_INET, 1, &unspec, sizeof unspec, SOCKSIFY_DEST_NONE, 0},
        {"unspec-send-on-6", AF_INET6, 0, &unspec, sizeof unspec, SOCKSIFY_DEST_NONE, 0},
        {"v4-on-6", AF_INET6, 0, &v4, sizeof v4, SOCKSIFY_DEST_ADDR, AF_INET},
        {"v6-on-6", AF_INET6, 0, &v6, sizeof v6, SOCKSIFY_DEST_ADDR, AF_INET6},
        {"v6-24-bytes", AF_INET6, 1, &v6, 24, SOCKSIFY_DEST_ADDR, AF_INET6},
        {"v6-short", AF_INET6, 0, &v6, 23, SOCKSIFY_DEST_UNKNOWN, 0},
        {"mapped-on-6", AF_INET6, 0, &mapped, sizeof mapped, SOCKSIFY_DEST_ADDR, AF_INET6},
        {"unix-on-4", AF_INET, 0, &other, sizeof other, SOCKSIFY_DEST_UNKNOWN, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage out;
        unsigned outlen = 0;
        int got = socksify_addr_dest(cases[i].domain, cases[i].op, cases[i].sa,
                                     cases[i].len, &out, &outlen);
        int ok = got == cases[i].want;
        char name[64];

        if (ok && got == SOCKSIFY_DEST_ADDR) {
            ok = out.ss_family == cases[i].want_family
                 && socksify_addr_family((const struct sockaddr *)&out, outlen)
                    == cases[i].want_family
                 && !socksify_addr_is_loopback((const struct sockaddr *)&out, outlen);
            if (ok && cases[i].want_family == AF_INET)
                ok = memcmp(&((struct sockaddr_in *)&out)->sin_addr, &v4.sin_addr, 4) == 0
                     && ((struct sockaddr_in *)&out)->sin_port == v4.sin_port;
        }
        snprintf(name, sizeof name, "%s(%s)", cases[i].name, ops[cases[i].op]);
        result(ok, "dest", name, NULL);
    }
}

int main(void)
{
    run_kinds();
    run_dests();
    return vector_done();
}
