/* The exec hooks that take a path: execve(), execv(), execl() and execle(). glibc's
 * execv() and execl*() call execve() through an internal alias that a hook of execve()
 * never sees, so each is hooked. The program must load the shim (exec.h,
 * socksify_exec_check()), and its environment gets the shim's variables back
 * (socksify_exec_with_env()); execv() and execl() pass environ, as glibc's do. */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

struct execve_args {
    const char *path;
    char *const *argv;
};

static int call_execve(void *ctx, char *const envp[])
{
    const struct execve_args *a = ctx;

    socksify_real.execve(a->path, a->argv, envp);
    return -errno;
}

/* The hooks' logic: returns -errno (exec returns only when it fails). */
static int socksify_execve(const char *path, char *const argv[], char *const envp[])
{
    struct execve_args a = {path, argv};
    int r = socksify_exec_check(path);

    return r < 0 ? r : socksify_exec_with_env(envp, call_execve, &a);
}

SOCKSIFY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    socksify_init();
    errno = -socksify_execve(path, argv, envp);
    return -1;
}

SOCKSIFY_EXPORT int execv(const char *path, char *const argv[])
{
    socksify_init();
    errno = -socksify_execve(path, argv, environ);
    return -1;
}

SOCKSIFY_EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    long argc;

    socksify_init();
    va_start(ap, arg);
    argc = socksify_exec_argc(&ap);
    va_end(ap);
    if (argc < 0) {
        errno = -argc;
        return -1;
    }
    {
        char *argv[argc + 1];

        va_start(ap, arg);
        socksify_exec_argv(argv, argc, arg, &ap);
        va_end(ap);
        errno = -socksify_execve(path, argv, environ);
        return -1;
    }
}

SOCKSIFY_EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    long argc;

    socksify_init();
    va_start(ap, arg);
    argc = socksify_exec_argc(&ap);
    va_end(ap);
    if (argc < 0) {
        errno = -argc;
        return -1;
    }
    {
        char *argv[argc + 1];
        char *const *envp;

        va_start(ap, arg);
        socksify_exec_argv(argv, argc, arg, &ap);
        envp = va_arg(ap, char *const *);  /* after the NULL */
        va_end(ap);
        errno = -socksify_execve(path, argv, envp);
        return -1;
    }
}
