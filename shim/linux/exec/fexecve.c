/* The fexecve() hook: the program behind the descriptor must load the shim (exec.h,
 * socksify_exec_check_fd()), and its environment gets the shim's variables back. */
#include <errno.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

struct fexecve_args {
    int fd;
    char *const *argv;
};

static int call_fexecve(void *ctx, char *const envp[])
{
    const struct fexecve_args *a = ctx;

    socksify_real.fexecve(a->fd, a->argv, envp);
    return -errno;
}

/* The hook's logic: returns -errno (exec returns only when it fails). */
static int socksify_fexecve(int fd, char *const argv[], char *const envp[])
{
    struct fexecve_args a = {fd, argv};
    int r = socksify_exec_check_fd(fd);

    return r < 0 ? r : socksify_exec_with_env(envp, call_fexecve, &a);
}

SOCKSIFY_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    socksify_init();
    errno = -socksify_fexecve(fd, argv, envp);
    return -1;
}
