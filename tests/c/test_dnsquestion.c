/* C tests of the DNS question reader (shim/common/dnsquestion.c) on the shared vectors.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common tests/c/test_dnsquestion.c shim/common/dnsquestion.c
 *   ./a.out tests/vectors/dnsquestion.txt
 *
 * Every `question` and `bad-question` line of the vectors file is one case, and so is
 * every check of run_api() below (tests/unit/test_dnsquestion.py checks the passed
 * count). The last line is "N passed, M failed".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnsquestion.h"
#include "socksify_wire.h"
#include "vectors.h"

static void run_vectors(const char *path)
{
    char line[4096];
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        perror(path);
        exit(2);
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *kind = strtok(line, " \n"), *hex, *third, *fourth;
        uint8_t msg[1024];
        char name[SOCKSIFY_MAX_NAME + 1];
        unsigned qtype = 0;
        int len, r;

        if (kind == NULL || kind[0] == '#')
            continue;
        hex = strtok(NULL, " \n");
        third = strtok(NULL, " \n");
        fourth = strtok(NULL, " \n");
        if (hex == NULL || third == NULL || (len = unhex(hex, msg, sizeof msg)) < 0) {
            result(0, kind, "?", "malformed vector line");
            continue;
        }
        r = socksify_dns_question(msg, (size_t)len, name, sizeof name, &qtype);
        if (strcmp(kind, "question") == 0 && fourth != NULL) {
            const char *want = strcmp(fourth, ".") == 0 ? "" : fourth;
            result(r == (int)strlen(want) && strcmp(name, want) == 0 &&
                   qtype == (unsigned)atoi(third), kind, fourth, "wrong name or type");
        } else if (strcmp(kind, "bad-question") == 0) {
            int want = strcmp(third, "ENAMETOOLONG") == 0 ? -ENAMETOOLONG : -EINVAL;
            result(r == want, kind, third, "wrong error");
        } else {
            result(0, kind, "?", "unknown vector kind");
        }
    }
    fclose(f);
}

/* Edge cases of the API: 4 checks. */
static void run_api(void)
{
    static const uint8_t msg[] = {0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                  1, 'a', 0, 0, 1, 0, 1};
    char name[4];

    result(socksify_dns_question(NULL, sizeof msg, name, sizeof name, NULL) == -EINVAL,
           "api", "NULL message", "accepted");
    result(socksify_dns_question(msg, sizeof msg, name, 0, NULL) == -EINVAL, "api",
           "no room at all", "accepted");
    result(socksify_dns_question(msg, sizeof msg, name, 1, NULL) == -ENAMETOOLONG, "api",
           "no room for the name", "accepted");
    result(socksify_dns_question(msg, sizeof msg, name, 2, NULL) == 1 &&
           strcmp(name, "a") == 0, "api", "just enough room, no qtype pointer", "refused");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/vectors/dnsquestion.txt\n", argv[0]);
        return 2;
    }
    run_vectors(argv[1]);
    run_api();
    return vector_done();
}
