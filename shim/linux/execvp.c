/* The exec hooks that search $PATH: execvp(), execvpe() and execlp() (glibc's call its
 * internal alias of execvpe(), which no hook sees). The program the search finds must
 * load the shim (exec.h, socksify_exec_check_search()), and the environment gets the
 * shim's variables back; then libc's execvpe() searches and runs it. */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

struct execvpe_args {
    const char *file;
    char *const *argv;
};

static int call_execvpe(void *ctx, char *const envp[])
{
    const struct execvpe_args *a = ctx;

    socksify_real.execvpe(a->file, a->argv, envp);
    return -errno;
}

/* The hooks' logic: returns -errno (exec returns only when it fails). */
static int socksify_execvpe(const char *file, char *const argv[], char *const envp[])
{
    struct execvpe_args a = {file, argv};
    int r = socksify_exec_check_search(file);

    return r < 0 ? r : socksify_exec_with_env(envp, call_execvpe, &a);
}

SOCKSIFY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    socksify_init();
    errno = -socksify_execvpe(file, argv, envp);
    return -1;
}

SOCKSIFY_EXPORT int execvp(const char *file, char *const argv[])
{
    socksify_init();
    errno = -socksify_execvpe(file, argv, environ);
    return -1;
}

SOCKSIFY_EXPORT int execlp(const char *file, const char *arg, ...)
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
        errno = -socksify_execvpe(file, argv, environ);
        return -1;
    }
}
