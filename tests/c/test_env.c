/* C tests of the exec hooks' environment merging (shim/common/env.c).
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common tests/c/test_env.c shim/common/env.c
 *   ./a.out
 *
 * Every entry of the tables below is one case (tests/unit/test_shim_c.py checks the
 * passed count against their sizes). The last line is "N passed, M failed".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "env.h"
#include "vectors.h"

#define SHIM "/opt/socksify/libsocksify.so"

/* LD_PRELOAD lists: 8 entries. */
static void run_preload_has(void)
{
    static const struct { const char *list; int want; } cases[] = {
        {SHIM, 1},                          {"/a.so " SHIM, 1},
        {"/a.so:" SHIM ":/b.so", 1},        {"  " SHIM "  ", 1},
        {"", 0},                            {SHIM ".bak", 0},
        {"/x" SHIM, 0},                     {"/a.so /b.so", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        result(socksify_env_preload_has(cases[i].list, SHIM) == cases[i].want,
               "preload", cases[i].list[0] ? cases[i].list : "(empty)", "wrong answer");
}

/* "A|B|C": the environment joined with '|', for comparisons. */
static void join(char *const env[], char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; env[i] != NULL; i++) {
        if (i > 0)
            strncat(out, "|", len - strlen(out) - 1);
        strncat(out, env[i], len - strlen(out) - 1);
    }
}

/* Merges with the shim's two captured variables: 11 entries. */
static void run_merge(void)
{
    static char *vars[] = {"SOCKSIFY_SOCKET=/run/s.sock", "SOCKSIFY_SESSION=0011223344556677",
                           NULL};
    static const struct {
        const char *name;
        char *env[5];       /* NULL-terminated; {NULL} is empty */
        int null_env;       /* pass envp == NULL */
        const char *shim;   /* NULL: no shim */
        const char *want;   /* joined with '|' */
    } cases[] = {
        {"no-preload", {"PATH=/bin", NULL}, 0, SHIM,
         "PATH=/bin|SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677|"
         "LD_PRELOAD=" SHIM},
        {"empty-env", {NULL}, 0, SHIM,
         "SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677|LD_PRELOAD=" SHIM},
        {"null-env", {NULL}, 1, SHIM,
         "SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677|LD_PRELOAD=" SHIM},
        {"other-preload", {"LD_PRELOAD=/a.so:/b.so", "HOME=/", NULL}, 0, SHIM,
         "LD_PRELOAD=" SHIM " /a.so:/b.so|HOME=/|SOCKSIFY_SOCKET=/run/s.sock|"
         "SOCKSIFY_SESSION=0011223344556677"},
        {"empty-preload", {"LD_PRELOAD=", NULL}, 0, SHIM,
         "LD_PRELOAD=" SHIM "|SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677"},
        {"complete", {"SOCKSIFY_SESSION=0011223344556677", "LD_PRELOAD=/a.so " SHIM,
                      "SOCKSIFY_SOCKET=/run/s.sock", NULL}, 0, SHIM,
         "SOCKSIFY_SESSION=0011223344556677|LD_PRELOAD=/a.so " SHIM
         "|SOCKSIFY_SOCKET=/run/s.sock"},
        {"program-value-kept", {"SOCKSIFY_SOCKET=/other.sock", "LD_PRELOAD=" SHIM, NULL}, 0,
         SHIM, "SOCKSIFY_SOCKET=/other.sock|LD_PRELOAD=" SHIM
         "|SOCKSIFY_SESSION=0011223344556677"},
        {"empty-value-replaced", {"SOCKSIFY_SOCKET=", "X=1", NULL}, 0, SHIM,
         "SOCKSIFY_SOCKET=/run/s.sock|X=1|SOCKSIFY_SESSION=0011223344556677|"
         "LD_PRELOAD=" SHIM},
        {"similar-names", {"SOCKSIFY_SOCKETX=1", "SOCKSIFY_SOCKE=2", "LD_PRELOADX=3", NULL},
         0, SHIM, "SOCKSIFY_SOCKETX=1|SOCKSIFY_SOCKE=2|LD_PRELOADX=3|"
         "SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677|LD_PRELOAD=" SHIM},
        {"two-preloads", {"LD_PRELOAD=/a.so", "LD_PRELOAD=" SHIM, "LD_PRELOAD=/b.so", NULL},
         0, SHIM, "LD_PRELOAD=" SHIM " /a.so|LD_PRELOAD=" SHIM "|LD_PRELOAD=" SHIM
         " /b.so|SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677"},
        {"no-shim", {"LD_PRELOAD=/a.so", NULL}, 0, NULL,
         "LD_PRELOAD=/a.so|SOCKSIFY_SOCKET=/run/s.sock|SOCKSIFY_SESSION=0011223344556677"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *const *env = cases[i].null_env ? NULL : cases[i].env;
        char *out[16], buf[512], got[1024];
        size_t entries, chars;
        int n;

        socksify_env_merge_size(env, cases[i].shim, vars, &entries, &chars);
        n = socksify_env_merge(env, cases[i].shim, vars, out, entries, buf, chars);
        if (n < 0) {
            result(0, "merge", cases[i].name, "-E2BIG with the sizes merge_size gave");
            continue;
        }
        join(out, got, sizeof got);
        result(strcmp(got, cases[i].want) == 0 && (size_t)n < entries && out[n] == NULL,
               "merge", cases[i].name, got);
    }
}

/* Edge cases: 5 checks. */
static void run_limits(void)
{
    static char *vars[] = {"SOCKSIFY_SOCKET=/run/s.sock", NULL};
    static char *env[] = {"LD_PRELOAD=/a.so", "PATH=/bin", NULL};
    static char *complete[] = {"LD_PRELOAD=" SHIM, "SOCKSIFY_SOCKET=/x", NULL};
    char *out[8], buf[128];
    size_t entries, chars;

    socksify_env_merge_size(env, SHIM, vars, &entries, &chars);
    result(socksify_env_merge(env, SHIM, vars, out, 3, buf, sizeof buf) == -E2BIG,
           "limits", "out-too-small", "not -E2BIG");
    result(socksify_env_merge(env, SHIM, vars, out, 0, buf, sizeof buf) == -E2BIG,
           "limits", "out-empty", "not -E2BIG");
    result(socksify_env_merge(env, SHIM, vars, out, 8, buf, strlen("LD_PRELOAD=" SHIM))
           == -E2BIG, "limits", "buf-too-small", "not -E2BIG");
    result(socksify_env_merge(env, SHIM, vars, out, 4, buf, sizeof buf) == 3
           && strcmp(out[0], "LD_PRELOAD=" SHIM " /a.so") == 0 && out[1] == env[1]
           && out[2] == vars[0] && out[3] == NULL && entries >= 4
           && chars >= strlen(out[0]) + 1,
           "limits", "exact-fit", "wrong result or sizes");
    /* A complete environment is passed through entry by entry: the same pointers. */
    result(socksify_env_merge(complete, SHIM, vars, out, 8, buf, sizeof buf) == 2
           && out[0] == complete[0] && out[1] == complete[1] && out[2] == NULL,
           "limits", "complete-same-pointers", "entries copied or changed");
}

int main(void)
{
    run_preload_has();
    run_merge();
    run_limits();
    return vector_done();
}
