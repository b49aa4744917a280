/* Copies of descriptors (fdcopy.h). */
#include <errno.h>

#include "carried.h"
#include "fdcopy.h"
#include "peers.h"

void socksify_fd_copied(int oldfd, int newfd)
{
    int saved_errno = errno;

    if (socksify_carried_maybe(oldfd) || socksify_carried_maybe(newfd))
        socksify_carried_dup(oldfd, newfd);
    socksify_peer_dup(oldfd, newfd);
    errno = saved_errno;
}
