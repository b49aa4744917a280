/* C tests of the control wire format against the shared vectors.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common tests/c/test_wire.c shim/common/wire.c shim/common/addr.c
 *   ./a.out tests/vectors/control.txt
 *
 * Every `request`, `resolve`, `reply`, `peer-reply`, `name-reply`, `bad-reply` and
 * `bad-name-reply` line of the vectors file is one case, and so is every entry of the loopback, name and API tables below
 * (tests/unit/test_shim_c.py checks the passed count against those numbers). The last
 * line is "N passed, M failed".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "name.h"
#include "socksify_wire.h"
#include "vectors.h"

static void check_request(const char *name, char **f, int n)
{
    struct socksify_connect_req req;
    uint8_t want[64], got[SOCKSIFY_REQUEST_SIZE];
    const char *addr = field(f, n, "addr");
    int wlen = unhex(field(f, n, "hex"), want, sizeof want);
    long op = number(f, n, "op");

    memset(&req, 0, sizeof req);
    req.family = (uint8_t)number(f, n, "family");
    req.socktype = (uint8_t)number(f, n, "socktype");
    req.port = (uint16_t)number(f, n, "port");
    if (op != SOCKSIFY_OP_CONNECT && op != SOCKSIFY_OP_PEERNAME && op != SOCKSIFY_OP_NAMEOF
        && op != SOCKSIFY_OP_HANDOFF && op != SOCKSIFY_OP_UNWRAP)
        return result(0, "request", name, "bad op field");
    if (!addr || inet_pton(req.family == 6 ? AF_INET6 : AF_INET, addr, req.addr) != 1)
        return result(0, "request", name, "bad addr field");
    if (unhex(field(f, n, "session"), req.session, sizeof req.session) != 8)
        return result(0, "request", name, "bad session field");
    if (wlen != SOCKSIFY_REQUEST_SIZE)
        return result(0, "request", name, "hex is not 48 bytes");
    if (socksify_wire_encode_request((unsigned)op, &req, got, sizeof got)
        != SOCKSIFY_REQUEST_SIZE)
        return result(0, "request", name, "encode failed");
    if (memcmp(got, want, sizeof got) != 0)
        return result(0, "request", name, "encoded bytes differ");
    /* encode_connect is the CONNECT case of encode_request. */
    if (op == SOCKSIFY_OP_CONNECT
        && (socksify_wire_encode_connect(&req, got, sizeof got) != SOCKSIFY_REQUEST_SIZE
            || memcmp(got, want, sizeof got) != 0))
        return result(0, "request", name, "encode_connect differs");
    result(1, "request", name, "");
}

static void check_resolve(const char *name, char **f, int n)
{
    uint8_t want[SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME], session[8];
    uint8_t got[SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME];
    const char *host = field(f, n, "host");
    int wlen = unhex(field(f, n, "hex"), want, sizeof want);
    long family = number(f, n, "family");

    if (!host || wlen < 0 || (family != 0 && family != 4 && family != 6))
        return result(0, "resolve", name, "bad host, hex or family field");
    if (unhex(field(f, n, "session"), session, sizeof session) != 8)
        return result(0, "resolve", name, "bad session field");
    if ((size_t)wlen != SOCKSIFY_REQUEST_SIZE + strlen(host))
        return result(0, "resolve", name, "hex is not the header and the name");
    if (socksify_wire_encode_resolve(host, (unsigned)family, session, got, sizeof got)
        != wlen)
        return result(0, "resolve", name, "encode failed");
    if (memcmp(got, want, (size_t)wlen) != 0)
        return result(0, "resolve", name, "encoded bytes differ");
    /* Exactly big enough is enough; one byte less is not. */
    result(socksify_wire_encode_resolve(host, (unsigned)family, session, got,
                                        (size_t)wlen) == wlen
           && socksify_wire_encode_resolve(host, (unsigned)family, session, got,
                                           (size_t)wlen - 1) == -EINVAL,
           "resolve", name, "outlen not checked exactly");
}

static void check_reply(const char *name, char **f, int n)
{
    struct socksify_reply rep;
    struct socksify_peer peer;
    uint8_t raw[64], token[16];
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);
    int want_errno = errno_by_name(field(f, n, "errno"));

    if (unhex(field(f, n, "token"), token, sizeof token) != 16 || want_errno < 0)
        return result(0, "reply", name, "bad token or errno field");
    memset(&rep, 0xee, sizeof rep);
    if (len < 0 || socksify_wire_decode_reply(raw, (size_t)len, &rep) != 0)
        return result(0, "reply", name, "decode failed");
    if (rep.verdict != number(f, n, "verdict") || rep.code != number(f, n, "code")
        || rep.flags != number(f, n, "flags"))
        return result(0, "reply", name, "verdict, code or flags differ");
    if (rep.relay_port4 != number(f, n, "port4") || rep.relay_port6 != number(f, n, "port6"))
        return result(0, "reply", name, "relay ports differ");
    if (memcmp(rep.token, token, sizeof token) != 0)
        return result(0, "reply", name, "token differs");
    if (socksify_wire_errno(rep.code) != want_errno)
        return result(0, "reply", name, "errno differs");
    result(socksify_wire_decode_peer(raw, (size_t)len, &peer) == -EPROTO, "reply", name,
           "decode_peer accepted a non-PEER reply");
}

static void check_peer_reply(const char *name, char **f, int n)
{
    struct socksify_peer peer;
    struct socksify_reply rep, untouched;
    uint8_t raw[64], addr[16] = {0};
    const char *text = field(f, n, "addr");
    long family = number(f, n, "family");
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    if (len < 0 || (family != 4 && family != 6) || !text
        || inet_pton(family == 6 ? AF_INET6 : AF_INET, text, addr) != 1)
        return result(0, "peer-reply", name, "bad hex, family or addr field");
    memset(&peer, 0xee, sizeof peer);
    if (socksify_wire_decode_peer(raw, (size_t)len, &peer) != 0)
        return result(0, "peer-reply", name, "decode_peer failed");
    if (peer.family != family || peer.port != number(f, n, "port"))
        return result(0, "peer-reply", name, "family or port differs");
    if (memcmp(peer.addr, addr, sizeof addr) != 0)
        return result(0, "peer-reply", name, "addr differs");
    memset(&rep, 0xee, sizeof rep);
    untouched = rep;
    result(socksify_wire_decode_reply(raw, (size_t)len, &rep) == -EPROTO
           && memcmp(&rep, &untouched, sizeof rep) == 0,
           "peer-reply", name, "decode_reply accepted a PEER reply");
}

static void check_bad_reply(const char *name, char **f, int n)
{
    struct socksify_reply rep, untouched;
    struct socksify_peer peer, peer_untouched;
    uint8_t raw[64];
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    memset(&rep, 0xee, sizeof rep);
    untouched = rep;
    memset(&peer, 0xee, sizeof peer);
    peer_untouched = peer;
    if (len < 0)
        return result(0, "bad-reply", name, "bad hex field");
    if (socksify_wire_decode_reply(raw, (size_t)len, &rep) != -EPROTO
        || memcmp(&rep, &untouched, sizeof rep) != 0)
        return result(0, "bad-reply", name, "decode_reply did not reject it with -EPROTO");
    result(socksify_wire_decode_peer(raw, (size_t)len, &peer) == -EPROTO
           && memcmp(&peer, &peer_untouched, sizeof peer) == 0,
           "bad-reply", name, "decode_peer did not reject it with -EPROTO");
}

static void check_name_reply(const char *name, char **f, int n)
{
    struct socksify_reply rep, untouched;
    struct socksify_peer peer;
    uint8_t raw[SOCKSIFY_REPLY_SIZE + SOCKSIFY_MAX_NAME];
    char out[SOCKSIFY_MAX_NAME + 1];
    const char *host = field(f, n, "host");
    int len = unhex(field(f, n, "hex"), raw, sizeof raw), want;

    if (!host || len < 0)
        return result(0, "name-reply", name, "bad host or hex field");
    want = (int)strlen(host);
    memset(out, 0xee, sizeof out);
    if (socksify_wire_decode_name(raw, (size_t)len, out, sizeof out) != want
        || strcmp(out, host) != 0)
        return result(0, "name-reply", name, "decode_name failed or the name differs");
    /* Room for the name and its NUL is enough; one byte less is not. */
    if (socksify_wire_decode_name(raw, (size_t)len, out, (size_t)want + 1) != want
        || socksify_wire_decode_name(raw, (size_t)len, out, (size_t)want) != -ERANGE)
        return result(0, "name-reply", name, "outlen not checked exactly");
    memset(&rep, 0xee, sizeof rep);
    untouched = rep;
    if (socksify_wire_decode_reply(raw, SOCKSIFY_REPLY_SIZE, &rep) != -EPROTO
        || memcmp(&rep, &untouched, sizeof rep) != 0)
        return result(0, "name-reply", name, "decode_reply accepted a NAME reply's head");
    result(socksify_wire_decode_peer(raw, SOCKSIFY_REPLY_SIZE, &peer) == -EPROTO,
           "name-reply", name, "decode_peer accepted a NAME reply's head");
}

static void check_bad_name_reply(const char *name, char **f, int n)
{
    uint8_t raw[SOCKSIFY_REPLY_SIZE + SOCKSIFY_MAX_NAME + 8];
    char out[SOCKSIFY_MAX_NAME + 1], untouched[SOCKSIFY_MAX_NAME + 1];
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    memset(out, 0xee, sizeof out);
    memcpy(untouched, out, sizeof out);
    if (len < 0)
        return result(0, "bad-name-reply", name, "bad hex field");
    result(socksify_wire_decode_name(raw, (size_t)len, out, sizeof out) == -EPROTO
           && memcmp(out, untouched, sizeof out) == 0,
           "bad-name-reply", name, "decode_name did not reject it with -EPROTO");
}

static void check_line(const char *kind, const char *name, char **f, int n)
{
    if (strcmp(kind, "request") == 0)
        check_request(name, f, n);
    else if (strcmp(kind, "resolve") == 0)
        check_resolve(name, f, n);
    else if (strcmp(kind, "reply") == 0)
        check_reply(name, f, n);
    else if (strcmp(kind, "peer-reply") == 0)
        check_peer_reply(name, f, n);
    else if (strcmp(kind, "bad-reply") == 0)
        check_bad_reply(name, f, n);
    else if (strcmp(kind, "name-reply") == 0)
        check_name_reply(name, f, n);
    else if (strcmp(kind, "bad-name-reply") == 0)
        check_bad_name_reply(name, f, n);
    else
        result(0, kind, name, "unknown kind");
}

/* Loopback cases: 10 entries. */
static void run_loopback(void)
{
    static const struct { const char *addr; int family; int want; } cases[] = {
        {"127.0.0.1", AF_INET, 1},        {"127.255.0.9", AF_INET, 1},
        {"0.0.0.0", AF_INET, 1},          {"192.0.2.1", AF_INET, 0},
        {"::1", AF_INET6, 1},             {"::", AF_INET6, 1},
        {"::ffff:127.0.0.5", AF_INET6, 1}, {"::ffff:192.0.2.1", AF_INET6, 0},
        {"2001:db8::1", AF_INET6, 0},     {"::2", AF_INET6, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        unsigned len;

        memset(&ss, 0, sizeof ss);
        if (cases[i].family == AF_INET) {
            in4->sin_family = AF_INET;
            inet_pton(AF_INET, cases[i].addr, &in4->sin_addr);
            len = sizeof *in4;
        } else {
            in6->sin6_family = AF_INET6;
            inet_pton(AF_INET6, cases[i].addr, &in6->sin6_addr);
            len = sizeof *in6;
        }
        result(socksify_addr_is_loopback((struct sockaddr *)&ss, len) == cases[i].want,
               "loopback", cases[i].addr, "wrong answer");
    }
}

/* Names the lookup hooks resolve without asking the daemon: 16 entries. */
static void run_names(void)
{
    static const struct { const char *name; int want; } cases[] = {
        {"192.0.2.1", 1},      {"127.1", 1},            {"0x7f000001", 1},
        {"2130706433", 1},     {"2001:db8::1", 1},      {"fe80::1%eth0", 1},
        {"::ffff:1.2.3.4", 1}, {"localhost", 1},        {"LocalHost.", 1},
        {"a.b.localhost", 0},  {"example.org", 0},      {"notlocalhost", 0},
        {"localhost.org", 0},  {"1.2.3.4.example", 0},  {"1e100.net", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        result(socksify_name_is_local(cases[i].name) == cases[i].want, "name",
               cases[i].name[0] ? cases[i].name : "(empty)", "wrong answer");
}

/* API edge cases: 15 checks. */
static void run_api(void)
{
    struct socksify_connect_req req = {.family = 4, .socktype = 1, .port = 1};
    struct socksify_reply rep;
    struct socksify_peer peer;
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    struct sockaddr_storage relay;
    socklen_t relay_len;
    uint8_t buf[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE] = "SKFY\x01\x01";
    /* A PEER reply for 192.0.2.7:443 with a nonzero byte in the v4 addr's tail. */
    uint8_t peer_reply[SOCKSIFY_REPLY_SIZE] = "SKFY\x01\x03\x04\x00\x01\xbb\x00\x00"
                                              "\xc0\x00\x02\x07\x99";

    static const uint8_t zero_session[8];
    char long_name[SOCKSIFY_MAX_NAME + 2];
    uint8_t big[SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME + 1];

    /* A NAME reply for "ab" (34 bytes; the array has room for the literal's NUL). */
    static const uint8_t name_reply[SOCKSIFY_REPLY_SIZE + 3] =
        "SKFY\x01\x04\0\0\0\0\0\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0ab";
    char name_out[4];

    result(socksify_wire_version() == 1 && socksify_shim_abi_version() == 6,
           "api", "versions", "not 1 and 6");
    result(socksify_wire_decode_name(name_reply, 34, name_out, sizeof name_out) == 2
           && strcmp(name_out, "ab") == 0
           && socksify_wire_decode_name(name_reply, 34, NULL, 4) == -EINVAL
           && socksify_wire_decode_name(NULL, 34, name_out, 4) == -EPROTO
           && socksify_wire_decode_name(name_reply, 34, name_out, 2) == -ERANGE,
           "api", "decode-name", "wrong answer for a good reply or a NULL or short buffer");
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';  /* 256 bytes */
    result(socksify_wire_encode_resolve("", 0, zero_session, big, sizeof big) == -EINVAL
           && socksify_wire_encode_resolve(long_name, 0, zero_session, big, sizeof big)
              == -EINVAL
           && socksify_wire_encode_resolve("a b", 0, zero_session, big, sizeof big) == -EINVAL
           && socksify_wire_encode_resolve("a\x7f", 0, zero_session, big, sizeof big)
              == -EINVAL
           && socksify_wire_encode_resolve("\xc3\xa9", 0, zero_session, big, sizeof big)
              == -EINVAL
           && socksify_wire_encode_resolve("a\tb", 0, zero_session, big, sizeof big)
              == -EINVAL
           && socksify_wire_encode_resolve("a", 5, zero_session, big, sizeof big) == -EINVAL
           && socksify_wire_encode_resolve(NULL, 0, zero_session, big, sizeof big) == -EINVAL
           && socksify_wire_encode_resolve("a", 0, NULL, big, sizeof big) == -EINVAL
           && socksify_wire_encode_resolve("a", 0, zero_session, NULL, sizeof big) == -EINVAL,
           "api", "resolve-rejects", "accepted a bad name, family or pointer");
    long_name[SOCKSIFY_MAX_NAME] = '\0';  /* 255 bytes: the longest */
    result(socksify_wire_encode_resolve(long_name, 6, zero_session, big, sizeof big)
           == SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME
           && big[SOCKSIFY_REQ_OFF_BODY_LEN] == 0 && big[SOCKSIFY_REQ_OFF_BODY_LEN + 1] == 255
           && big[SOCKSIFY_REQ_OFF_OP] == SOCKSIFY_OP_RESOLVE
           && big[SOCKSIFY_REQ_OFF_FAMILY] == 6
           && socksify_wire_encode_resolve("~!", 4, zero_session, big, sizeof big)
              == SOCKSIFY_REQUEST_SIZE + 2,
           "api", "resolve-limits", "255 bytes or printable edges refused");
    result(socksify_wire_encode_request(3, &req, buf, sizeof buf) == -EINVAL
           && socksify_wire_encode_request(0, &req, buf, sizeof buf) == -EINVAL
           && socksify_wire_encode_request(6, &req, buf, sizeof buf) == -EINVAL,
           "api", "encode-bad-op", "not -EINVAL");
    result(socksify_wire_encode_request(SOCKSIFY_OP_NAMEOF, &req, buf, sizeof buf)
           == SOCKSIFY_REQUEST_SIZE && buf[SOCKSIFY_REQ_OFF_OP] == 4,
           "api", "encode-nameof", "op 4 refused");
    memset(&peer, 0xee, sizeof peer);
    result(socksify_wire_decode_peer(peer_reply, sizeof peer_reply, &peer) == 0
           && peer.family == 4 && peer.port == 443
           && memcmp(peer.addr, "\xc0\x00\x02\x07\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0,
           "api", "peer-v4-tail-ignored", "v4 tail not zeroed");
    peer_reply[SOCKSIFY_PEER_OFF_FAMILY] = 5;
    result(socksify_wire_decode_peer(peer_reply, sizeof peer_reply, &peer) == -EPROTO
           && socksify_wire_decode_peer(peer_reply, sizeof peer_reply - 1, &peer) == -EPROTO,
           "api", "peer-bad-family", "accepted family 5 or a short reply");
    result(socksify_wire_encode_connect(&req, buf, sizeof buf - 1) == -EINVAL,
           "api", "encode-short-buffer", "not -EINVAL");
    req.family = 5;
    result(socksify_wire_encode_connect(&req, buf, sizeof buf) == -EINVAL,
           "api", "encode-bad-family", "not -EINVAL");
    result(socksify_wire_decode_reply(reply, sizeof reply - 1, &rep) == -EPROTO
           && socksify_wire_decode_reply(reply, sizeof reply, &rep) == 0,
           "api", "decode-length", "short reply accepted or full one rejected");
    /* ::ffff:198.51.100.7 becomes an IPv4 request. */
    inet_pton(AF_INET6, "::ffff:198.51.100.7", &in6.sin6_addr);
    result(socksify_addr_fill_request((struct sockaddr *)&in6, sizeof in6, 1, buf, &req) == 0
           && req.family == 4 && req.port == 443 && memcmp(req.addr, "\xc6\x33\x64\x07", 4) == 0
           && memcmp(req.addr + 4, "\0\0\0\0\0\0\0\0\0\0\0\0", 12) == 0,
           "api", "fill-v4-mapped", "not unwrapped to IPv4");
    result(socksify_addr_fill_request((struct sockaddr *)&in4, sizeof in4 - 1, 1, buf, &req)
           == -EAFNOSUPPORT && socksify_addr_is_loopback((struct sockaddr *)&in4, 4) == 0,
           "api", "short-sockaddr", "accepted");
    rep.relay_port4 = 1080;
    rep.relay_port6 = 0;
    result(socksify_addr_relay(AF_INET6, &rep, &relay, &relay_len) == 0
           && relay_len == sizeof in6
           && ((struct sockaddr_in6 *)&relay)->sin6_port == htons(1080)
           && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&relay)->sin6_addr),
           "api", "relay-v6-fallback", "not [::ffff:127.0.0.1]:port4");
    rep.relay_port4 = 0;
    result(socksify_addr_relay(AF_INET, &rep, &relay, &relay_len) == -EPROTO,
           "api", "relay-no-port", "accepted port 0");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/vectors/control.txt\n", argv[0]);
        return 2;
    }
    vector_run(argv[1], check_line);
    run_loopback();
    run_names();
    run_api();
    return vector_done();
}
