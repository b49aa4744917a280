/* Pure helpers on host names (see name.h). */
#include <string.h>
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#define strncasecmp _strnicmp
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#endif

#include "name.h"

#ifdef _WIN32
/* Windows has no inet_aton(); inet_addr() takes the same forms (decimal, octal and
 * 0x-hex parts, 1 to 4 of them) and fails with INADDR_NONE, which is also the value
 * of the valid "255.255.255.255". */
static int inet_aton(const char *name, struct in_addr *a)
{
    unsigned long v = inet_addr(name);

    if (v == INADDR_NONE && strcmp(name, "255.255.255.255") != 0
        && strcmp(name, "0xffffffff") != 0 && strcmp(name, "4294967295") != 0)
        return 0;
    a->s_addr = v;
    return 1;
}
#endif

/* inet_aton() takes "a", "a.b", "a.b.c" and "a.b.c.d" with decimal, octal or 0x-hex
 * parts, and stops at whitespace; libc's resolver takes the exact forms as numeric.
 * With only digits, hex letters, x and dots allowed, inet_aton() has no whitespace to
 * stop at, so it accepts exactly those. */
static int is_numeric_v4(const char *name)
{
    struct in_addr a;

    if (name[0] < '0' || name[0] > '9')
        return 0;
    if (strspn(name, "0123456789abcdefABCDEFxX.") != strlen(name))
        return 0;
    return inet_aton(name, &a) == 1;
}

static int is_numeric_v6(const char *name)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a;
    const char *scope = strchr(name, '%');
    size_t len = scope != NULL ? (size_t)(scope - name) : strlen(name);

    if (len >= sizeof buf)
        return 0;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* "localhost" itself only: a name under ".localhost" goes to DNS with glibc's "hosts:
 * files dns" unless the hosts file names it, so it is the daemon's to decide (it
 * answers DIRECT for hosts-file names). */
static int is_localhost(const char *name)
{
    static const char local[] = "localhost";
    size_t len = strlen(name), n = sizeof local - 1;

    if (len > 0 && name[len - 1] == '.')
        len--;  /* the root: "localhost." */
    return len == n && strncasecmp(name, local, n) == 0;
}

int socksify_name_is_local(const char *name)
{
    if (name == NULL)
        return 0;
    return is_numeric_v4(name) || is_numeric_v6(name) || is_localhost(name);
}
