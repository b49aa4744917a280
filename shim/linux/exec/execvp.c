/* The execvpe() and execvp() hooks (glibc's call its internal alias of execvpe(), which
 * no hook sees; execlp() is in execl.c). The program the $PATH search finds must load
 * the shim, and the environment gets the shim's variables back (exec.h,
 * socksify_exec_search()); then libc's execvpe() searches and runs it. */
#include <errno.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    socksify_init();
    errno = -socksify_exec_search(file, argv, envp);
    return -1;
}

SOCKSIFY_EXPORT int execvp(const char *file, char *const argv[])
{
    socksify_init();
    errno = -socksify_exec_search(file, argv, environ);
    return -1;
}
