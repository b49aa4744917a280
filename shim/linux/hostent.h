/* A hostent with one address, in a caller's buffer: shared by the gethostbyname() and
 * gethostbyaddr() hooks (hostent.c). */
#ifndef SOCKSIFY_HOSTENT_H
#define SOCKSIFY_HOSTENT_H

#include <netdb.h>
#include <stdalign.h>
#include <stddef.h>

#include "socksify_wire.h"

/* What a hostent with one address and no alias needs: the two pointer lists, the
 * address, the name and its NUL. */
#define HOSTENT_BUF_SIZE(name_len) \
    (alignof(char *) + 3 * sizeof(char *) + SOCKSIFY_ADDR_SIZE + (name_len) + 1)

/* Fill ret for peer's address (family and addr; the port is ignored) in buf: h_name a
 * copy of name, no alias, one address. 0, or -ERANGE if buflen is too small. */
int socksify_fill_hostent(const char *name, const struct socksify_peer *peer,
                          struct hostent *ret, char *buf, size_t buflen);

/* The _r functions' return value, *result and *h_errnop for a hook's answer r (0: ret
 * is filled, or -errno with herr), as glibc has them: not found (-ENOENT) is 0 with a
 * NULL *result; the others return the errno value, also left in errno. herr goes to
 * *h_errnop and to h_errno, as glibc's resolver leaves it. */
int socksify_hostent_r_result(int r, int herr, struct hostent *ret,
                              struct hostent **result, int *h_errnop);

#endif
