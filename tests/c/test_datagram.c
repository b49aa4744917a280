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

static int passed, failed;

static void result(int ok, const char *kind, const char *name, const char *why)
{
    if (ok) {
        passed++;
        printf("ok   %s %s\n", kind, name);
    } else {
        failed++;
        printf("FAIL %s %s: %s\n", kind, name, why);
    }
}

/* The value of key=value among the line's fields, or NULL. */
static const char *field(char **fields, int n, const char *key)
{
    size_t klen = strlen(key);

    for (int i = 0; i < n; i++)
        if (strncmp(fields[i], key, klen) == 0 && fields[i][klen] == '=')
            return fields[i] + klen + 1;
    return NULL;
}

static long number(char **fields, int n, const char *key)
{
    const char *v = field(fields, n, key);
    return v ? strtol(v, NULL, 10) : -1;
}

/* Parse hex ("-" is empty) into out (at most max bytes); the byte count, or -1. */
static int unhex(const char *hex, uint8_t *out, size_t max)
{
    size_t len;

    if (hex == NULL)
        return -1;
    if (strcmp(hex, "-") == 0)
        return 0;
    len = strlen(hex);
    if (len % 2 || len / 2 > max)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        unsigned byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
            return -1;
        out[i] = (uint8_t)byte;
    }
    return (int)(len / 2);
}

static int errno_by_name(const char *name)
{
    static const struct { const char *name; int value; } table[] = {
        {"0", 0}, {"ECONNREFUSED", ECONNREFUSED}, {"ETIMEDOUT", ETIMEDOUT},
        {"ECONNRESET", ECONNRESET}, {"EHOSTUNREACH", EHOSTUNREACH},
    };
    for (size_t i = 0; name && i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0)
            return table[i].value;
    return -1;
}

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

static void run_vectors(const char *path)
{
    char line[2048];
    FILE *fp = fopen(path, "r");

    if (fp == NULL) {
        perror(path);
        exit(2);
    }
    while (fgets(line, sizeof line, fp)) {
        char *fields[16], *save = NULL;
        int n = 0;

        if (line[0] == '#' || line[0] == '\n')
            continue;
        for (char *tok = strtok_r(line, " \n", &save); tok && n < 16;
             tok = strtok_r(NULL, " \n", &save))
            fields[n++] = tok;
        if (n < 2)
            continue;
        if (strcmp(fields[0], "carry") == 0)
            check_carry(fields[1], fields + 2, n - 2);
        else if (strcmp(fields[0], "envelope") == 0)
            check_envelope(fields[1], fields + 2, n - 2);
        else if (strcmp(fields[0], "bad-envelope") == 0)
            check_bad(fields[1], fields + 2, n - 2);
        else
            result(0, fields[0], fields[1], "unknown vector kind");
    }
    fclose(fp);
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
    run_vectors(argv[1]);
    run_api();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
