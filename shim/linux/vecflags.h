/* preadv2()/pwritev2() on a socket (preadv2.c, pwritev2.c): with the offset -1 they
 * are readv()/writev() (any other offset fails with ESPIPE), and of their RWF_* flags
 * the kernel's socket calls honour only RWF_NOWAIT, as MSG_DONTWAIT. */
#ifndef SOCKSIFY_VECFLAGS_H
#define SOCKSIFY_VECFLAGS_H

#include <sys/socket.h>
#include <sys/uio.h>

/* The RWF_* flags a socket accepts (the kernel ignores all but RWF_NOWAIT there). */
#define SOCKSIFY_RWF_SOCKET (RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND)

/* The recvmsg()/sendmsg() flags for rwf (one of SOCKSIFY_RWF_SOCKET). */
static inline int socksify_rwf_msg_flags(int rwf)
{
    return (rwf & RWF_NOWAIT) ? MSG_DONTWAIT : 0;
}

#endif
