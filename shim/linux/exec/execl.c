/* The hooks of the list forms, execl(), execle() and execlp(): one body
 * (socksify_exec_list(), exec.h) turns the argument list into an argv, then execve()'s
 * or execvpe()'s logic runs as for the v forms. execl() and execlp() pass environ, as
 * glibc's do. */
#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    int r;

    socksify_init();
    va_start(ap, arg);
    r = socksify_exec_list(socksify_exec_path, path, arg, ap, 0);
    va_end(ap);
    errno = -r;
    return -1;
}

SOCKSIFY_EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    int r;

    socksify_init();
    va_start(ap, arg);
    r = socksify_exec_list(socksify_exec_path, path, arg, ap, 1);
    va_end(ap);
    errno = -r;
    return -1;
}

SOCKSIFY_EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    int r;

    socksify_init();
    va_start(ap, arg);
    r = socksify_exec_list(socksify_exec_search, file, arg, ap, 0);
    va_end(ap);
    errno = -r;
    return -1;
}
