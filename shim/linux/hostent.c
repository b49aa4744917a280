/* A hostent with one address in a caller's buffer, and the _r functions' results, for
 * the gethostbyname() and gethostbyaddr() hooks (see hostent.h). */
#include <errno.h>
#include <netdb.h>
#include <stdalign.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "hostent.h"
#include "socksify_wire.h"

int socksify_fill_hostent(const char *name, const struct socksify_peer *peer,
                          struct hostent *ret, char *buf, size_t buflen)
{
    size_t name_len = strlen(name), skip = -(uintptr_t)buf & (alignof(char *) - 1);
    size_t addr_len = peer->family == SOCKSIFY_FAMILY_INET ? 4 : 16;
    char **ptrs, *addr, *copy;

    if (buflen < HOSTENT_BUF_SIZE(name_len))
        return -ERANGE;
    ptrs = (char **)(void *)(buf + skip);  /* aliases {NULL}, addresses {addr, NULL} */
    addr = (char *)(ptrs + 3);
    copy = addr + SOCKSIFY_ADDR_SIZE;
    memcpy(addr, peer->addr, addr_len);
    memcpy(copy, name, name_len + 1);
    ptrs[0] = NULL;
    ptrs[1] = addr;
    ptrs[2] = NULL;
    ret->h_name = copy;
    ret->h_aliases = &ptrs[0];
    ret->h_addrtype = peer->family == SOCKSIFY_FAMILY_INET ? AF_INET : AF_INET6;
    ret->h_length = (int)addr_len;
    ret->h_addr_list = &ptrs[1];
    return 0;
}

int socksify_hostent_r_result(int r, int herr, struct hostent *ret,
                              struct hostent **result, int *h_errnop)
{
    *result = r == 0 ? ret : NULL;
    if (r == 0)
        return 0;
    *h_errnop = herr;
    h_errno = herr;  /* as glibc's resolver leaves it: some callers read it (CPython) */
    if (r == -ENOENT)
        return 0;
    errno = -r;
    return -r;
}
