/* C tests of the TCP control handshake (the DLL's shim/windows/tcpauth.c, BCrypt)
 * against the shared vectors. A Windows program: built with mingw and run under Wine
 * by tests/windows/test_wine_tcpauth.py.
 *
 *   x86_64-w64-mingw32-gcc -std=gnu11 -Ishim/windows tests/c/test_tcpauth.c \
 *       shim/windows/tcpauth.c -lbcrypt -o test_tcpauth.exe
 *   wine64 test_tcpauth.exe tests/vectors/tcpauth.txt
 *
 * Every `proof` and `bad-answer` line is one case, and so is the nonce check (two
 * nonces from the system RNG differ). The last line is "N passed, M failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socksify_tcpauth.h"
#include "vectors.h"

/* key=HEX among the line's words into out (exactly len bytes); 0 or -1. */
static int hex_field(char *line, const char *key, uint8_t *out, size_t len)
{
    char pat[32];
    const char *p;

    snprintf(pat, sizeof pat, " %s=", key);
    if ((p = strstr(line, pat)) == NULL)
        return -1;
    p += strlen(pat);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        if (sscanf(p + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return (p[2 * len] == ' ' || p[2 * len] == '\n' || p[2 * len] == '\r'
            || p[2 * len] == '\0') ? 0 : -1;
}

int main(int argc, char **argv)
{
    static char line[4096];
    FILE *f;

    if (argc != 2 || (f = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "usage: test_tcpauth VECTORS\n");
        return 2;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        uint8_t key[16], nc[16], nd[16], hello[20], answer[48], proof[32];
        uint8_t got_hello[20], got_proof[32];
        char kind[32], name[64];

        if (line[0] == '#' || sscanf(line, "%31s %63s", kind, name) != 2)
            continue;
        if (strcmp(kind, "proof") == 0) {
            if (hex_field(line, "key", key, 16) || hex_field(line, "nc", nc, 16)
                || hex_field(line, "nd", nd, 16) || hex_field(line, "hello", hello, 20)
                || hex_field(line, "answer", answer, 48) || hex_field(line, "proof", proof, 32)) {
                result(0, kind, name, "unreadable line");
                continue;
            }
            socksify_tcpauth_hello(nc, got_hello);
            if (memcmp(got_hello, hello, sizeof hello) != 0)
                result(0, kind, name, "hello differs");
            else if (socksify_tcpauth_check_answer(key, nc, answer, got_proof) != 0)
                result(0, kind, name, "a good answer was rejected");
            else
                result(memcmp(got_proof, proof, sizeof proof) == 0, kind, name,
                       "proof differs");
        } else if (strcmp(kind, "bad-answer") == 0) {
            if (hex_field(line, "key", key, 16) || hex_field(line, "nc", nc, 16)
                || hex_field(line, "answer", answer, 48)) {
                result(0, kind, name, "unreadable line");
                continue;
            }
            memset(got_proof, 0xAA, sizeof got_proof);
            result(socksify_tcpauth_check_answer(key, nc, answer, got_proof) != 0, kind,
                   name, "a bad answer was accepted");
        } else {
            result(0, kind, name, "unknown kind");
        }
    }
    fclose(f);
    {
        uint8_t a[16], b[16], zero[16] = {0};
        int ok = socksify_tcpauth_nonce(a) == 0 && socksify_tcpauth_nonce(b) == 0
                 && memcmp(a, b, 16) != 0 && memcmp(a, zero, 16) != 0;
        result(ok, "nonce", "system-rng", "BCryptGenRandom failed or repeated");
    }
    return vector_done();
}
