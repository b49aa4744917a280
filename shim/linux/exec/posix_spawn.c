/* The posix_spawn() and posix_spawnp() hooks (glibc's system() and popen() call an
 * internal alias, not these: see docs/data-path.md "Children"). The program must load
 * the shim (exec.h; for posix_spawnp() the one the $PATH search finds), and its
 * environment gets the shim's variables back. Errors are returned, errno is kept. */
#include <errno.h>
#include <spawn.h>
#include <sys/types.h>

#include "exec.h"
#include "init.h"
#include "real.h"
#include "socksify_wire.h"

struct spawn_args {
    __typeof__(socksify_real.posix_spawn) spawn;
    pid_t *pid;
    const char *path;
    const posix_spawn_file_actions_t *actions;
    const posix_spawnattr_t *attr;
    char *const *argv;
};

static int call_spawn(void *ctx, char *const envp[])
{
    const struct spawn_args *a = ctx;

    return -a->spawn(a->pid, a->path, a->actions, a->attr, a->argv, envp);
}

/* The hooks' logic: returns 0 or -errno. */
static int socksify_posix_spawn(const struct spawn_args *a, char *const envp[], int search)
{
    int r = search ? socksify_exec_check_search(a->path) : socksify_exec_check(a->path);

    return r < 0 ? r : socksify_exec_with_env(envp, call_spawn, (void *)a);
}

SOCKSIFY_EXPORT int posix_spawn(pid_t *pid, const char *path,
                                const posix_spawn_file_actions_t *actions,
                                const posix_spawnattr_t *attr, char *const argv[],
                                char *const envp[])
{
    int saved_errno = errno, r;
    struct spawn_args a;

    socksify_init();
    a = (struct spawn_args){socksify_real.posix_spawn, pid, path, actions, attr, argv};
    r = socksify_posix_spawn(&a, envp, 0);
    errno = saved_errno;
    return -r;
}

SOCKSIFY_EXPORT int posix_spawnp(pid_t *pid, const char *file,
                                 const posix_spawn_file_actions_t *actions,
                                 const posix_spawnattr_t *attr, char *const argv[],
                                 char *const envp[])
{
    int saved_errno = errno, r;
    struct spawn_args a;

    socksify_init();
    a = (struct spawn_args){socksify_real.posix_spawnp, pid, file, actions, attr, argv};
    r = socksify_posix_spawn(&a, envp, 1);
    errno = saved_errno;
    return -r;
}
