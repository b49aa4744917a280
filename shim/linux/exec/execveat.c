/* The execveat() hook: the program named by (dirfd, path, flags) must load the shim
 * (exec.h, socksify_exec_check_at(): AT_EMPTY_PATH with an empty path is dirfd itself,
 * as for fexecve()), and its environment gets the shim's variables back. glibc's own
 * fexecve() makes the execveat system call directly, not through this symbol, so a
 * program's fexecve() is checked once, by fexecve.c. A libc without execveat() (before
 * glibc 2.34) leaves it NULL (real.h): the hook then fails with ENOSYS, as the
 * kernel does for a call it does not know. */
#include <errno.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

struct execveat_args {
    __typeof__(socksify_real.execveat) real;
    int dirfd;
    const char *path;
    char *const *argv;
    int flags;
};

static int call_execveat(void *ctx, char *const envp[])
{
    const struct execveat_args *a = ctx;

    a->real(a->dirfd, a->path, a->argv, envp, a->flags);
    return -errno;
}

/* The hook's logic: returns -errno (exec returns only when it fails). */
static int socksify_execveat(int dirfd, const char *path, char *const argv[],
                             char *const envp[], int flags)
{
    struct execveat_args a = {SOCKSIFY_REAL_OPTIONAL(execveat), dirfd, path, argv, flags};
    int r;

    if (a.real == NULL)
        return -ENOSYS;
    r = socksify_exec_check_at(dirfd, path, flags);
    return r < 0 ? r : socksify_exec_with_env(envp, call_execveat, &a);
}

SOCKSIFY_EXPORT int execveat(int dirfd, const char *path, char *const argv[],
                             char *const envp[], int flags)
{
    socksify_init();
    errno = -socksify_execveat(dirfd, path, argv, envp, flags);
    return -1;
}
