/* The dup2() hook (and __dup2(), glibc's other name for it): as dup.c; and what the shim knew of the socket newfd held (closed
 * by dup2()) is forgotten. (connect.c's SWAP comes through here too: the program's
 * descriptor then holds the pre-built tunnel, and keeps no entry of the socket it
 * replaced.) A handed-off socket newfd held, its last copy, tells the daemon first
 * (UNWRAP, unwrap.h). */
#include <fcntl.h>
#include <unistd.h>

#include "carried.h"
#include "fdcopy.h"
#include "real.h"
#include "socksify_wire.h"
#include "unwrap.h"

SOCKSIFY_EXPORT int dup2(int fd, int newfd)
{
    int r;

    if (fd != newfd && socksify_carried_maybe(newfd) && fcntl(fd, F_GETFD) >= 0)
        socksify_unwrap_closing(newfd);     /* the socket newfd held is closed by it */
    r = SOCKSIFY_REAL_HOT(dup2)(fd, newfd);

    if (r >= 0)
        socksify_fd_copied(fd, r);
    return r;
}

SOCKSIFY_EXPORT int __dup2(int fd, int newfd)
{
    return dup2(fd, newfd);
}
