/* execveat() with an empty environment, in the ways it names a program:
 *
 *   execveat abs|rel|empty|nofollow TARGET [ARGS...]
 *
 * runs TARGET with ARGS (argv[0] = TARGET) and envp = {NULL}: "abs" by its absolute
 * path, "rel" relative to a descriptor of its directory, "empty" through an O_PATH
 * descriptor of the program with AT_EMPTY_PATH, "nofollow" as "rel" with
 * AT_SYMLINK_NOFOLLOW. On failure it prints "execveat ERRNO_NAME" and exits 126 for
 * EPERM, else 127.
 *
 *   execveat connect HOST PORT
 *
 * (the child) prints "preload yes|no", connects to HOST:PORT, writes a line and prints
 * "connect OK|ERRNO_NAME"; exits 0 if it connected. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *name(int err)
{
    const char *e = strerrorname_np(err);
    return err == 0 ? "OK" : e != NULL ? e : "E?";
}

static int child(const char *host, int port)
{
    const char *preload = getenv("LD_PRELOAD");
    struct sockaddr_in a = {0};
    int fd = socket(AF_INET, SOCK_STREAM, 0), err = 0;

    printf("preload %s\n", preload != NULL && strstr(preload, "socksify") ? "yes" : "no");
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0
        || write(fd, "execveat\n", 9) != 9)
        err = errno;
    printf("connect %s\n", name(err));
    return err != 0;
}

int main(int argc, char **argv)
{
    char *empty[] = {NULL}, dir[4096], base[4096];
    const char *mode;
    int fd, flags = 0;

    if (argc == 4 && strcmp(argv[1], "connect") == 0)
        return child(argv[2], atoi(argv[3]));
    if (argc < 3) {
        fprintf(stderr, "usage: %s abs|rel|empty|nofollow TARGET [ARGS...]\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    argv += 2;  /* argv[0] is TARGET now */
    fflush(stdout);
    if (strcmp(mode, "abs") == 0) {
        execveat(AT_FDCWD, argv[0], argv, empty, 0);
    } else if (strcmp(mode, "empty") == 0) {
        fd = open(argv[0], O_PATH);  /* no O_CLOEXEC: a #! script needs it open */
        if (fd >= 0)
            execveat(fd, "", argv, empty, AT_EMPTY_PATH);
    } else {
        snprintf(dir, sizeof dir, "%s", argv[0]);
        snprintf(base, sizeof base, "%s", argv[0]);
        if (strcmp(mode, "nofollow") == 0)
            flags = AT_SYMLINK_NOFOLLOW;
        fd = open(dirname(dir), O_PATH | O_DIRECTORY);
        if (fd >= 0)
            execveat(fd, basename(base), argv, empty, flags);
    }
    printf("execveat %s\n", name(errno));
    return errno == EPERM ? 126 : 127;
}
