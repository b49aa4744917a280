/* The execve() and execv() hooks. glibc's execv() and execl*() call execve() through
 * an internal alias that a hook of execve() never sees, so each is hooked (the l forms
 * in execl.c). The program must load the shim and its environment gets the shim's
 * variables back (exec.h, socksify_exec_path()); execv() passes environ, as glibc's
 * does. */
#include <errno.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    socksify_init();
    errno = -socksify_exec_path(path, argv, envp);
    return -1;
}

SOCKSIFY_EXPORT int execv(const char *path, char *const argv[])
{
    socksify_init();
    errno = -socksify_exec_path(path, argv, environ);
    return -1;
}
