/* Lookups that fetch connect() past an LD_PRELOAD shim, each used to connect:
 *
 *   dlbypass HOST PORT
 *
 * For each way of finding connect() it connects a new TCP socket to HOST:PORT, writes a
 * line and prints "WAY OK|ERRNO_NAME". The ways: the plain call; dlsym() with
 * RTLD_DEFAULT, RTLD_NEXT and a handle of libc.so.6; dlvsym() with RTLD_NEXT,
 * RTLD_DEFAULT and a handle of libc.so.6 for connect's x86-64 version GLIBC_2.2.5; and
 * dlsym(libc, "dlsym") then that function's answer for "connect". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef void *(*dlsym_fn)(void *, const char *);

int main(int argc, char **argv)
{
    struct sockaddr_in a = {0};
    void *libc = dlopen("libc.so.6", RTLD_NOW);
    dlsym_fn libc_dlsym = libc != NULL ? (dlsym_fn)dlsym(libc, "dlsym") : NULL;
    struct {
        const char *way;
        connect_fn fn;
    } ways[] = {
        {"plain", connect},
        {"dlsym-default", (connect_fn)dlsym(RTLD_DEFAULT, "connect")},
        {"dlsym-next", (connect_fn)dlsym(RTLD_NEXT, "connect")},
        {"dlsym-libc", (connect_fn)dlsym(libc, "connect")},
        {"dlvsym-next", (connect_fn)dlvsym(RTLD_NEXT, "connect", "GLIBC_2.2.5")},
        {"dlvsym-default", (connect_fn)dlvsym(RTLD_DEFAULT, "connect", "GLIBC_2.2.5")},
        {"dlvsym-libc", (connect_fn)dlvsym(libc, "connect", "GLIBC_2.2.5")},
        {"libc-dlsym-libc", libc_dlsym != NULL ? (connect_fn)libc_dlsym(libc, "connect")
                                               : NULL},
    };

    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), err = 0;

        if (ways[i].fn == NULL)
            err = ENOENT;  /* the lookup failed */
        else if (ways[i].fn(fd, (struct sockaddr *)&a, sizeof a) < 0
                 || write(fd, "dlbypass\n", 9) != 9)
            err = errno;
        printf("%s %s\n", ways[i].way, err == 0 ? "OK" : strerrorname_np(err));
        fflush(stdout);
        close(fd);
    }
    return 0;
}
