/* A second LD_PRELOAD library that wraps connect() the usual way, through
 * dlsym(RTLD_NEXT, "connect"), and says at exit how often it was called:
 * "wrapconnect calls N" on stderr. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/socket.h>

static int calls;

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*next)(int, const struct sockaddr *, socklen_t);

    if (next == NULL)
        next = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    return next(fd, addr, len);
}

__attribute__((destructor)) static void report(void)
{
    fprintf(stderr, "wrapconnect calls %d\n", calls);
}
