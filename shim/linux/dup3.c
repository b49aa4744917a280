/* The dup3() hook: as dup2.c (O_CLOEXEC changes nothing the shim keeps; a handed-off
 * socket newfd held tells the daemon first). */
#include <fcntl.h>
#include <unistd.h>

#include "carried.h"
#include "fdcopy.h"
#include "real.h"
#include "socksify_wire.h"
#include "unwrap.h"

SOCKSIFY_EXPORT int dup3(int fd, int newfd, int flags)
{
    int r;

    if (fd != newfd && socksify_carried_maybe(newfd) && fcntl(fd, F_GETFD) >= 0)
        socksify_unwrap_closing(newfd);     /* the socket newfd held is closed by it */
    r = SOCKSIFY_REAL_HOT(dup3)(fd, newfd, flags);

    if (r >= 0)
        socksify_fd_copied(fd, r);
    return r;
}
