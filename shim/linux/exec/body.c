/* The bodies the exec entry points share (exec.h): execve()'s and execvpe()'s logic,
 * and the argument list of the l forms turned into an argv on the stack. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <unistd.h>

#include "exec.h"
#include "real.h"

struct exec_args {
    const char *path;
    char *const *argv;
};

static int call_execve(void *ctx, char *const envp[])
{
    const struct exec_args *a = ctx;

    socksify_real.execve(a->path, a->argv, envp);
    return -errno;
}

static int call_execvpe(void *ctx, char *const envp[])
{
    const struct exec_args *a = ctx;

    socksify_real.execvpe(a->path, a->argv, envp);
    return -errno;
}

int socksify_exec_path(const char *path, char *const argv[], char *const envp[])
{
    struct exec_args a = {path, argv};
    int r = socksify_exec_check(path);

    return r < 0 ? r : socksify_exec_with_env(envp, call_execve, &a);
}

int socksify_exec_search(const char *file, char *const argv[], char *const envp[])
{
    struct exec_args a = {file, argv};
    int r = socksify_exec_check_search(file);

    return r < 0 ? r : socksify_exec_with_env(envp, call_execvpe, &a);
}

int socksify_exec_list(socksify_exec_body body, const char *path, const char *arg,
                       va_list ap, int with_envp)
{
    va_list count;
    long argc = 1;  /* arg */

    va_copy(count, ap);
    while (va_arg(count, char *) != NULL) {
        if (++argc >= INT_MAX) {
            va_end(count);
            return -E2BIG;
        }
    }
    va_end(count);
    {
        char *argv[argc + 1];
        char *const *envp;

        argv[0] = (char *)arg;
        for (long i = 1; i <= argc; i++)
            argv[i] = va_arg(ap, char *);  /* the last one is the NULL */
        envp = with_envp ? va_arg(ap, char *const *) : environ;
        return body(path, argv, envp);
    }
}
