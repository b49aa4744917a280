/* The fcntl() hook, __fcntl() (glibc's other name for it) and fcntl64() (what a
 * program built with _FILE_OFFSET_BITS=64 calls: Python's os.dup() among them): F_DUPFD and F_DUPFD_CLOEXEC are copies, as
 * dup() (dup.c, fdcopy.h). Every other command and descriptor goes to libc untouched,
 * with no system call of the shim's. The third argument is read as
 * libc reads it, a pointer-sized word, whatever the command, and passed on as is. */
#include <fcntl.h>
#include <stdarg.h>

#include "fdcopy.h"
#include "real.h"
#include "socksify_wire.h"

/* After fcntl(fd, cmd) returned r. */
static int copied(int fd, int cmd, int r)
{
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        socksify_fd_copied(fd, r);
    return r;
}

SOCKSIFY_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return copied(fd, cmd, SOCKSIFY_REAL_HOT(fcntl)(fd, cmd, arg));
}

SOCKSIFY_EXPORT int __fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return copied(fd, cmd, SOCKSIFY_REAL_HOT(fcntl)(fd, cmd, arg));
}

SOCKSIFY_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, cmd);
    arg = va_arg(ap, void *);
    va_end(ap);
    return copied(fd, cmd, SOCKSIFY_REAL_HOT(fcntl64)(fd, cmd, arg));
}
