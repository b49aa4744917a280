/* C tests of the carried-datagram format (docs/wire.md, "Carried datagrams") against
 * the shared vectors: the CARRY reply and the 36-byte envelope.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common tests/c/test_datagram.c shim/common/wire.c
 *   ./a.out tests/vectors/datagram.txt
 *
 * Every `carry`, `envelope` and `bad-envelope` line of the vectors file is one case,
 * and so is every entry of the API table below (tests/unit/test_shim_c.py checks the
 * passed count against those numbers). The last line is "N passed, M failed".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socksify_wire.h"
#include "vectors.h"

static void check_carry(const char *name, char **f, int n)
{
    uint8_t raw[64], gen[8], token[8];
    struct socksify_reply rep;
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    if (len < 0 || unhex(field(f, n, "generation"), gen, 8) != 8
        || unhex(field(f, n, "token"), token, 8) != 8)
        return result(0, "carry", name, "bad vector line");
    if (socksify_wire_decode_reply(raw, (size_t)len, &rep) != 0)
        return result(0, "carry", name, "rejected");
    result(rep.verdict == SOCKSIFY_VERDICT_CARRY && rep.code == 0 && rep.flags == 0
           && rep.relay_port4 == number(f, n, "port4")
           && rep.relay_port6 == number(f, n, "port6")
           && memcmp(rep.token, gen, 8) == 0
           && memcmp(rep.token + 8, token, 8) == 0
           && memcmp(raw + SOCKSIFY_CARRY_OFF_TOKEN, token, 8) == 0,
           "carry", name, "fields differ");
}

static void check_envelope(const char *name, char **f, int n)
{
    uint8_t raw[256], payload[256], out[SOCKSIFY_DGRAM_SIZE], token[8], addr[16];
    struct socksify_dgram d, enc;
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);
    int plen = unhex(field(f, n, "payload"), payload, sizeof payload);
    const char *a = field(f, n, "addr");
    long family = number(f, n, "family");

    memset(addr, 0, sizeof addr);
    if (len < 0 || plen < 0 || unhex(field(f, n, "token"), token, 8) != 8 || a == NULL
        || inet_pton(family == 4 ? AF_INET : AF_INET6, a, addr) != 1)
        return result(0, "envelope", name, "bad vector line");
    if (socksify_wire_decode_dgram(raw, (size_t)len, &d) != 0)
        return result(0, "envelope", name, "rejected");
    if (d.kind != number(f, n, "kind") || d.family != family || d.code != number(f, n, "code")
        || d.port != number(f, n, "port") || memcmp(d.addr, addr, 16) != 0
        || memcmp(d.token, token, 8) != 0)
        return result(0, "envelope", name, "decoded fields differ");
    if (socksify_wire_errno(d.code) != errno_by_name(field(f, n, "errno")))
        return result(0, "envelope", name, "errno differs");
    if (len != SOCKSIFY_DGRAM_SIZE + plen
        || memcmp(raw + SOCKSIFY_DGRAM_SIZE, payload, (size_t)plen) != 0)
        return result(0, "envelope", name, "payload differs");
    memset(&enc, 0, sizeof enc);
    enc.kind = (uint8_t)number(f, n, "kind");
    enc.family = (uint8_t)family;
    enc.code = (uint8_t)number(f, n, "code");
    enc.port = (uint16_t)number(f, n, "port");
    memcpy(enc.addr, addr, 16);
    memcpy(enc.token, token, 8);
    result(socksify_wire_encode_dgram(&enc, out, sizeof out) == SOCKSIFY_DGRAM_SIZE
           && memcmp(out, raw, SOCKSIFY_DGRAM_SIZE) == 0,
           "envelope", name, "encoding differs");
}

static void check_bad(const char *name, char **f, int n)
{
    uint8_t raw[256];
    struct socksify_dgram d;
    int len = unhex(field(f, n, "hex"), raw, sizeof raw);

    if (len < 0)
        return result(0, "bad-envelope", name, "bad vector line");
    memset(&d, 0x5a, sizeof d);
    result(socksify_wire_decode_dgram(raw, (size_t)len, &d) == -EPROTO && d.kind == 0x5a,
           "bad-envelope", name, "accepted, or out touched");
}

static void check_line(const char *kind, const char *name, char **f, int n)
{
    if (strcmp(kind, "carry") == 0)
        check_carry(name, f, n);
    else if (strcmp(kind, "envelope") == 0)
        check_envelope(name, f, n);
    else if (strcmp(kind, "bad-envelope") == 0)
        check_bad(name, f, n);
    else
        result(0, kind, name, "unknown vector kind");
}

/* Edge cases of the API: 6 cases. */
static void run_api(void)
{
    uint8_t buf[64];
    struct socksify_dgram d;

    memset(&d, 0, sizeof d);
    d.family = SOCKSIFY_FAMILY_INET;
    result(socksify_wire_encode_dgram(&d, buf, SOCKSIFY_DGRAM_SIZE - 1) == -EINVAL,
           "api", "encode-short-buffer", "accepted");
    result(socksify_wire_encode_dgram(NULL, buf, sizeof buf) == -EINVAL,
           "api", "encode-null", "accepted");
    d.kind = 2;
    result(socksify_wire_encode_dgram(&d, buf, sizeof buf) == -EINVAL,
           "api", "encode-bad-kind", "accepted");
    d.kind = SOCKSIFY_DGRAM_KIND_DATA;
    d.family = 5;
    result(socksify_wire_encode_dgram(&d, buf, sizeof buf) == -EINVAL,
           "api", "encode-bad-family", "accepted");
    d.family = SOCKSIFY_FAMILY_INET;
    d.code = SOCKSIFY_CODE_CONNREFUSED;  /* DATA is written with code 0 */
    result(socksify_wire_encode_dgram(&d, buf, sizeof buf) == SOCKSIFY_DGRAM_SIZE
           && buf[SOCKSIFY_DGRAM_OFF_CODE] == 0, "api", "data-code-zero", "code written");
    result(socksify_wire_decode_dgram(buf, SOCKSIFY_DGRAM_SIZE, NULL) == -EPROTO,
           "api", "decode-null-out", "accepted");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/vectors/datagram.txt\n", argv[0]);
        return 2;
    }
    vector_run(argv[1], check_line);
    run_api();
    return vector_done();
}
