/* What every C test here shares: the case count and its report, and the reading of the
 * shared vector files in tests/vectors (one case per line: `KIND NAME key=value ...`,
 * `#` comments and blank lines skipped; hex values, `-` for none). Included by each
 * test (one translation unit each), so everything is static inline.
 *
 * A test prints one line per case, "ok   KIND NAME" or "FAIL KIND NAME: WHY", and
 * last "N passed, M failed" (vector_done()), which tests/unit/test_shim_c.py reads. */
#ifndef SOCKSIFY_TEST_VECTORS_H
#define SOCKSIFY_TEST_VECTORS_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

/* One case: ok, or failed for why (NULL or "" says nothing more). */
static inline void result(int ok, const char *kind, const char *name, const char *why)
{
    if (ok) {
        passed++;
        printf("ok   %s %s\n", kind, name);
    } else {
        failed++;
        if (why != NULL && why[0] != '\0')
            printf("FAIL %s %s: %s\n", kind, name, why);
        else
            printf("FAIL %s %s\n", kind, name);
    }
}

/* The report's last line; the exit status. */
static inline int vector_done(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

/* The value of key=value among a line's fields, or NULL. */
static inline const char *field(char **fields, int n, const char *key)
{
    size_t klen = strlen(key);

    for (int i = 0; i < n; i++)
        if (strncmp(fields[i], key, klen) == 0 && fields[i][klen] == '=')
            return fields[i] + klen + 1;
    return NULL;
}

/* key's value as a decimal number, or -1. */
static inline long number(char **fields, int n, const char *key)
{
    const char *v = field(fields, n, key);

    return v ? strtol(v, NULL, 10) : -1;
}

/* Hex into out (at most max bytes; "-" is none): the byte count, or -1. */
static inline int unhex(const char *hex, uint8_t *out, size_t max)
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

/* An errno the vectors name ("0" for none), or -1 for a name not known here. */
static inline int errno_by_name(const char *name)
{
    static const struct { const char *name; int value; } table[] = {
        {"0", 0}, {"ECONNREFUSED", ECONNREFUSED}, {"ETIMEDOUT", ETIMEDOUT},
        {"EACCES", EACCES}, {"ENETUNREACH", ENETUNREACH}, {"EHOSTUNREACH", EHOSTUNREACH},
        {"ECONNRESET", ECONNRESET}, {"EPROTO", EPROTO}, {"EAFNOSUPPORT", EAFNOSUPPORT},
    };

    for (size_t i = 0; name && i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0)
            return table[i].value;
    return -1;
}

/* Call check(kind, name, the rest of the fields, their count) for every case line of
 * the file at path; a line with fewer than two fields fails as a case. An unreadable
 * file ends the test (exit 2). */
typedef void (*vector_check)(const char *kind, const char *name, char **f, int n);

static inline void vector_run(const char *path, vector_check check)
{
    char line[4096];
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
            result(0, "vectors", path, "a line with fewer than two fields");
        else
            check(fields[0], fields[1], fields + 2, n - 2);
    }
    fclose(fp);
}

#endif
