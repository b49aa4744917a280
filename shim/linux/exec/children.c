/* Children keep the shim: a program that clears or rewrites its environment before
 * exec (`env -i`, subprocess with env={}) would otherwise start a child without it. The
 * shim's path and the SOCKSIFY_* variables it started with are captured once, at
 * initialisation, into a fixed buffer; the exec hooks put them back into the child's
 * environment, built on the stack (no malloc between vfork and exec). */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "config.h"
#include "env.h"
#include "exec.h"
#include "log.h"

/* The variables the shim reads, put back when a child's environment lacks them. */
static const char *const var_names[] = {
    "SOCKSIFY_SOCKET", "SOCKSIFY_SESSION", "SOCKSIFY_LOG", "SOCKSIFY_TIMEOUT",
    "SOCKSIFY_RUNTIME_DIR", "SOCKSIFY_ALLOW_UNPROTECTED", "SOCKSIFY_PROXY_LOOPBACK",
};
#define N_VARS (sizeof var_names / sizeof var_names[0])

/* The largest environment copied onto the stack: pointers, and LD_PRELOAD strings. */
#define MAX_ENTRIES 8192
#define MAX_CHARS   32768

/* Written once by socksify_children_capture() (under the initialisation's
 * pthread_once), read-only afterwards. */
static struct {
    int secure;              /* AT_SECURE: nothing captured, children untouched */
    char shim[PATH_MAX];     /* this library, as the loader named it ("" if unknown) */
    char *vars[N_VARS + 1];  /* "NAME=value" in text, NULL-terminated */
    char text[8192];
} captured;

void socksify_children_capture(void)
{
    Dl_info info;
    size_t used = 0, n = 0;

    if (getauxval(AT_SECURE)) {
        captured.secure = 1;
        return;
    }
    if (dladdr((void *)&socksify_children_capture, &info) != 0 && info.dli_fname != NULL
        && strlen(info.dli_fname) < sizeof captured.shim) {
        if (info.dli_fname[0] == '/' || realpath(info.dli_fname, captured.shim) == NULL)
            strcpy(captured.shim, info.dli_fname);
    } else {
        LOG_WARN("cannot find the shim's own path; children that drop LD_PRELOAD "
                 "will run without it");
    }
    for (size_t i = 0; i < N_VARS; i++) {
        const char *value = socksify_getenv(var_names[i]);
        size_t name_len = strlen(var_names[i]), len;

        if (value == NULL)
            continue;
        len = name_len + 1 + strlen(value) + 1;
        if (len > sizeof captured.text - used) {
            LOG_WARN("%s is too long to pass on to children", var_names[i]);
            continue;
        }
        captured.vars[n++] = captured.text + used;
        memcpy(captured.text + used, var_names[i], name_len);
        captured.text[used + name_len] = '=';
        memcpy(captured.text + used + name_len + 1, value, len - name_len - 1);
        used += len;
    }
    captured.vars[n] = NULL;
    LOG_DEBUG("children get LD_PRELOAD with %s and %zu SOCKSIFY_* variables",
              captured.shim, n);
}

int socksify_exec_with_env(char *const envp[], socksify_exec_fn fn, void *ctx)
{
    size_t entries, chars;
    int r;

    if (captured.secure)
        return fn(ctx, envp);
    socksify_env_merge_size(envp, captured.shim, captured.vars, &entries, &chars);
    if (entries > MAX_ENTRIES || chars > MAX_CHARS) {
        LOG_WARN("environment too big (%zu entries, %zu bytes of LD_PRELOAD) to add the "
                 "shim's variables; refusing the exec", entries, chars);
        return -E2BIG;
    }
    {
        char *out[entries];
        char buf[chars > 0 ? chars : 1];

        r = socksify_env_merge(envp, captured.shim, captured.vars, out, entries, buf,
                               sizeof buf);
        if (r < 0) {
            LOG_WARN("cannot build the child's environment: %s", socksify_strerror(-r));
            return r;
        }
        return fn(ctx, out);
    }
}
