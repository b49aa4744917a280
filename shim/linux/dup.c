/* The dup() hook: the copy of a carried socket (carried.h) is a carried socket too, so
 * its sends get the envelope and its receives lose it, and the copy of a socket whose
 * peer the shim noted (peers.h) reports that peer (fdcopy.h). Any other descriptor:
 * libc's dup(), and no system call of the shim's. */
#include <unistd.h>

#include "fdcopy.h"
#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT int dup(int fd)
{
    int r = SOCKSIFY_REAL_HOT(dup)(fd);

    if (r >= 0)
        socksify_fd_copied(fd, r);
    return r;
}
