/* C tests of the datagram handoff (docs/wire.md, "Datagram handoff: WRAP") against the
 * shared vectors, and of the shim's payload shift (shim/linux/wrapshift.c).
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common -Ishim/linux tests/c/test_wrap.c \
 *      shim/common/wire.c shim/linux/wrapshift.c
 *   ./a.out tests/vectors/wrap.txt
 *
 * Every `wrap-request`, `wrap`, `bad-wrap` and `match` line of the vectors file is one
 * case, and so is every entry of the shift table below (tests/unit/test_shim_c.py
 * checks the passed count against those numbers). The last line is "N passed, M failed".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socksify_wire.h"
#include "wrapshift.h"
#include "vectors.h"

#define MAX_RAW 1024

static int parse_addr(char **f, int n, uint8_t addr[16])
{
    const char *a = field(f, n, "addr");

    memset(addr, 0, 16);
    return a != NULL && inet_pton(number(f, n, "family") == 4 ? AF_INET : AF_INET6, a, addr) == 1;
}

static void check_request(const char *name, char **f, int n)
{
    uint8_t raw[MAX_RAW], out[SOCKSIFY_REQUEST_SIZE];
    struct socksify_connect_req req;
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    memset(&req, 0, sizeof req);
    if (len != SOCKSIFY_REQUEST_SIZE || !parse_addr(f, n, req.addr)
        || unhex(field(f, n, "session"), req.session, 8) != 8)
        return result(0, "wrap-request", name, "bad vector line");
    req.family = (uint8_t)number(f, n, "family");
    req.socktype = (uint8_t)number(f, n, "socktype");
    req.port = (uint16_t)number(f, n, "port");
    result(socksify_wire_encode_request(SOCKSIFY_OP_WRAP, &req, out, sizeof out)
           == SOCKSIFY_REQUEST_SIZE && memcmp(out, raw, sizeof out) == 0,
           "wrap-request", name, "encoding differs");
}

static int load_wrap(char **f, int n, struct socksify_wrap *w, const uint8_t **raw_out,
                     int *len_out)
{
    static uint8_t raw[MAX_RAW];
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    *raw_out = raw;
    *len_out = len;
    return len > 0 && socksify_wire_decode_wrap(raw, (size_t)len, w) == 0;
}

static void check_wrap(const char *name, char **f, int n)
{
    uint8_t addr[16], gen[8], token[8], send[256], reply[256], mask[256];
    struct socksify_wrap w;
    struct socksify_reply rep;
    const uint8_t *raw;
    int len, slen, rlen, mlen;

    if (!parse_addr(f, n, addr) || unhex(field(f, n, "generation"), gen, 8) != 8
        || unhex(field(f, n, "token"), token, 8) != 8
        || (slen = unhex(field(f, n, "send"), send, sizeof send)) < 0
        || (rlen = unhex(field(f, n, "reply"), reply, sizeof reply)) < 0
        || (mlen = unhex(field(f, n, "mask"), mask, sizeof mask)) != rlen)
        return result(0, "wrap", name, "bad vector line");
    if (!load_wrap(f, n, &w, &raw, &len))
        return result(0, "wrap", name, "rejected");
    result(w.family == number(f, n, "family") && w.port == number(f, n, "port")
           && w.carrier_port4 == number(f, n, "carrier4")
           && w.carrier_port6 == number(f, n, "carrier6")
           && memcmp(w.addr, addr, 16) == 0 && memcmp(w.generation, gen, 8) == 0
           && memcmp(w.token, token, 8) == 0 && w.send_len == slen && w.reply_len == rlen
           && memcmp(w.send, send, (size_t)slen) == 0
           && memcmp(w.reply, reply, (size_t)rlen) == 0
           && memcmp(w.mask, mask, (size_t)mlen) == 0
           && socksify_wire_wrap_body_len(raw, SOCKSIFY_REPLY_SIZE) == len - SOCKSIFY_REPLY_SIZE
           /* a reader of the other replies rejects it */
           && socksify_wire_decode_reply(raw, SOCKSIFY_REPLY_SIZE, &rep) == -EPROTO,
           "wrap", name, "decoded fields differ");
}

static void check_bad(const char *name, char **f, int n)
{
    uint8_t raw[MAX_RAW];
    struct socksify_wrap w;
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    if (len < 0)
        return result(0, "bad-wrap", name, "bad vector line");
    memset(&w, 0x5a, sizeof w);
    result(socksify_wire_decode_wrap(raw, (size_t)len, &w) == -EPROTO && w.family == 0x5a,
           "bad-wrap", name, "accepted, or out touched");
}

/* The wrap replies seen so far, by name, for the match lines. */
static struct { char name[64]; struct socksify_wrap w; } wraps[8];
static int nwraps;

static void remember_wrap(const char *name, char **f, int n)
{
    const uint8_t *raw;
    int len;

    if (nwraps < 8 && load_wrap(f, n, &wraps[nwraps].w, &raw, &len)) {
        snprintf(wraps[nwraps].name, sizeof wraps[nwraps].name, "%s", name);
        nwraps++;
    }
}

static void check_match(const char *name, char **f, int n)
{
    uint8_t dgram[MAX_RAW], payload[MAX_RAW];
    const char *which = field(f, n, "reply"), *want = field(f, n, "payload");
    const struct socksify_wrap *w = NULL;
    int len = unhex(field(f, n, "datagram"), dgram, sizeof dgram);
    int drop = want != NULL && strcmp(want, "drop") == 0;
    int plen = drop ? 0 : unhex(want, payload, sizeof payload);

    for (int i = 0; which && i < nwraps; i++)
        if (strcmp(wraps[i].name, which) == 0)
            w = &wraps[i].w;
    if (w == NULL || len < 0 || plen < 0)
        return result(0, "match", name, "bad vector line");
    if (drop)
        return result(!socksify_wire_wrap_match(w, dgram, (size_t)len), "match", name,
                      "matched a datagram to drop");
    result(socksify_wire_wrap_match(w, dgram, (size_t)len)
           && len - w->reply_len == plen
           && memcmp(dgram + w->reply_len, payload, (size_t)plen) == 0,
           "match", name, "not matched, or another payload");
}

static void check_line(const char *kind, const char *name, char **f, int n)
{
    if (strcmp(kind, "wrap-request") == 0)
        check_request(name, f, n);
    else if (strcmp(kind, "wrap") == 0) {
        check_wrap(name, f, n);
        remember_wrap(name, f, n);
    } else if (strcmp(kind, "bad-wrap") == 0)
        check_bad(name, f, n);
    else if (strcmp(kind, "match") == 0)
        check_match(name, f, n);
    else
        result(0, kind, name, "unknown vector kind");
}

/* One shift case: a datagram of `plen` payload bytes (0, 1, 2, ...) after a prefix of
 * `prefix` bytes, read into [scratch of `scratch` bytes, buffers of the given sizes];
 * the buffers must then hold the payload's first min(room, plen) bytes. */
static void shift_case(const char *name, size_t scratch, size_t prefix, size_t plen,
                       const size_t *sizes, size_t nsizes)
{
    uint8_t dgram[512], sbuf[64], bufs[4][128], flat[512];
    struct iovec iov[4];
    size_t room = 0, at, got, n, want;

    for (size_t i = 0; i < prefix; i++)
        dgram[i] = 0xEE;
    for (size_t i = 0; i < plen; i++)
        dgram[prefix + i] = (uint8_t)i;
    for (size_t i = 0; i < nsizes; i++) {
        memset(bufs[i], 0xCC, sizeof bufs[i]);
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = sizes[i];
        room += sizes[i];
    }
    /* what recvmsg() does with [scratch, iov...] */
    n = prefix + plen;
    memcpy(sbuf, dgram, n < scratch ? n : scratch);
    got = n > scratch ? n - scratch : 0;
    if (got > room)
        got = room;
    at = scratch;
    for (size_t i = 0, left = got; i < nsizes && left; i++) {
        size_t take = left < sizes[i] ? left : sizes[i];
        memcpy(bufs[i], dgram + at, take);
        at += take;
        left -= take;
    }
    n = socksify_wrap_unshift(iov, nsizes, sbuf, scratch, prefix,
                              (n < scratch ? n : scratch) + got);
    want = plen < room ? plen : room;
    at = 0;
    for (size_t i = 0; i < nsizes; i++) {
        memcpy(flat + at, bufs[i], sizes[i]);
        at += sizes[i];
    }
    for (size_t i = 0; i < want; i++)
        if (flat[i] != (uint8_t)i)
            return result(0, "shift", name, "payload bytes differ");
    result(n == want, "shift", name, "returned length differs");
}

/* 8 cases. */
static void run_shift(void)
{
    static const size_t one[] = {100}, three[] = {3, 1, 50}, tiny[] = {4, 4};
    static const size_t empty[] = {0, 7};

    shift_case("same-length", 10, 10, 40, one, 1);
    shift_case("shorter-prefix", 22, 10, 40, one, 1);
    shift_case("shorter-prefix-segments", 36, 10, 40, three, 3);
    shift_case("truncated", 22, 10, 40, tiny, 2);
    shift_case("truncated-inside-scratch", 36, 10, 40, tiny, 2);
    shift_case("empty-payload", 22, 10, 0, one, 1);
    shift_case("payload-in-scratch-only", 36, 10, 5, three, 3);
    shift_case("empty-first-segment", 22, 10, 6, empty, 2);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/vectors/wrap.txt\n", argv[0]);
        return 2;
    }
    vector_run(argv[1], check_line);
    run_shift();
    return vector_done();
}
