/* The syscall() hook: a program (or a library: libuv up to 1.44 sends and receives UDP
 * batches this way) may make sendmmsg() and recvmmsg() as raw system calls through
 * libc's syscall(); those two go to the shim's hooks (sendmmsg.c, recvmmsg.c), so a
 * carried socket's datagrams are enveloped and stripped as with the libc calls, and a
 * datagram is never sent unasked. Every other number goes to libc's syscall()
 * untouched. (A program that issues the instruction itself, as Go does, is beyond any
 * preloaded library: the isolation path is for those.) */
#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include "real.h"
#include "socksify_wire.h"

SOCKSIFY_EXPORT long syscall(long number, ...)
{
    va_list ap;
    long a[6];

    /* libc's syscall() reads six arguments whatever the number: so does this */
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    switch (number) {
    case SYS_sendmmsg:
        return sendmmsg((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3]);
    case SYS_recvmmsg:
        return recvmmsg((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3],
                        (struct timespec *)a[4]);
    default:
        return SOCKSIFY_REAL_HOT(syscall)(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
}
