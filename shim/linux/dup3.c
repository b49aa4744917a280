/* The dup3() hook: as dup2.c (O_CLOEXEC changes nothing the shim keeps). */
#include <unistd.h>

#include "fdcopy.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int dup3(int fd, int newfd, int flags)
{
    int r = SOCKSIFY_REAL_HOT(dup3)(fd, newfd, flags);

    if (r >= 0)
        socksify_fd_copied(fd, r);
    return r;
}
