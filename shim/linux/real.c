/* The real-function table (real.h), filled once by dlsym(RTLD_NEXT) of each name:
 * libc's own dlsym() (dlsym.h), never the shim's hook of it. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dlsym.h"
#include "real.h"

struct socksify_real socksify_real;

static const struct {
    const char *name;
    const char *old_name;  /* the pre-2.34 glibc name in libresolv, or NULL */
    size_t offset;
    enum { REQUIRED, OPTIONAL, LATE, HOT } kind;  /* LATE: optional, and its library may
                                                     be loaded later (looked up again);
                                                     HOT: required, and looked up on
                                                     demand before the initialisation */
} symbols[] = {
#define REQUIRED(member) {#member, NULL, offsetof(struct socksify_real, member), REQUIRED}
#define OPTIONAL(member) {#member, NULL, offsetof(struct socksify_real, member), OPTIONAL}
#define HOT(member, name) {name, NULL, offsetof(struct socksify_real, member), HOT}
#define LATE(member, old_name) \
    {#member, old_name, offsetof(struct socksify_real, member), LATE}
    REQUIRED(connect), REQUIRED(getpeername), REQUIRED(sendto), REQUIRED(sendmsg),
    REQUIRED(sendmmsg), REQUIRED(getaddrinfo), REQUIRED(getnameinfo),
    REQUIRED(gethostbyname), REQUIRED(gethostbyname2), REQUIRED(gethostbyname_r),
    REQUIRED(gethostbyname2_r), REQUIRED(gethostbyaddr), REQUIRED(gethostbyaddr_r),
    REQUIRED(execve), REQUIRED(execvpe), REQUIRED(fexecve), REQUIRED(posix_spawn),
    REQUIRED(posix_spawnp),
    OPTIONAL(execveat),
    HOT(recvfrom, "recvfrom"), HOT(recvmsg, "recvmsg"), HOT(recvmmsg, "recvmmsg"),
    HOT(recv, "recv"), HOT(read, "read"), HOT(send, "send"), HOT(write, "write"),
    HOT(read_chk, "__read_chk"), HOT(recv_chk, "__recv_chk"),
    HOT(recvfrom_chk, "__recvfrom_chk"), HOT(syscall, "syscall"),
    HOT(readv, "readv"), HOT(writev, "writev"), HOT(preadv2, "preadv2"),
    HOT(pwritev2, "pwritev2"), HOT(preadv64v2, "preadv64v2"),
    HOT(pwritev64v2, "pwritev64v2"),
    HOT(dup, "dup"), HOT(dup2, "dup2"), HOT(dup3, "dup3"), HOT(fcntl, "fcntl"),
    HOT(fcntl64, "fcntl64"), HOT(close, "close"), OPTIONAL(close_range),
    LATE(res_query, "__res_query"), LATE(res_nquery, "__res_nquery"),
    LATE(res_search, "__res_search"), LATE(res_nsearch, "__res_nsearch"),
    LATE(res_querydomain, "__res_querydomain"), LATE(res_nquerydomain, "__res_nquerydomain"),
    LATE(res_send, "__res_send"), LATE(res_nsend, "__res_nsend"),
#undef REQUIRED
#undef OPTIONAL
#undef LATE
#undef HOT
};

_Static_assert(sizeof symbols / sizeof symbols[0]
                   == sizeof(struct socksify_real) / sizeof(void (*)(void)),
               "every member of struct socksify_real has its line in symbols[]");

static void **slot(size_t offset)
{
    return (void **)((char *)&socksify_real + offset);
}

static void *lookup(size_t i)
{
    void *sym = socksify_real_dlsym(RTLD_NEXT, symbols[i].name);

    if (sym == NULL && symbols[i].old_name != NULL)
        sym = socksify_real_dlsym(RTLD_NEXT, symbols[i].old_name);
    return sym;
}

void socksify_real_resolve(void)
{
    static const char msg[] = "socksify: the real symbol is missing from libc: ";

    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        void *sym = lookup(i);

        if (sym == NULL && (symbols[i].kind == REQUIRED || symbols[i].kind == HOT)) {
            /* Cannot forward calls to anything: stop loudly rather than misbehave. */
            socksify_stderr(msg, sizeof msg - 1);
            socksify_stderr(symbols[i].name, strlen(symbols[i].name));
            socksify_stderr("\n", 1);
            abort();
        }
        __atomic_store_n(slot(symbols[i].offset), sym, __ATOMIC_RELEASE);
    }
}

void *socksify_real_optional(size_t offset)
{
    void *sym = __atomic_load_n(slot(offset), __ATOMIC_ACQUIRE);

    if (sym != NULL)
        return sym;
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        if (symbols[i].offset == offset
            && (symbols[i].kind == LATE || symbols[i].kind == HOT)) {
            sym = lookup(i);
            __atomic_store_n(slot(offset), sym, __ATOMIC_RELEASE);
        }
    }
    return sym;
}
