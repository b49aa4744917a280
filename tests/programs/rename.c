/* A program that calls itself by another name, then connects.
 *
 *   rename NAME HOST PORT
 *
 * Unless argv[0] already is NAME, it executes itself again (/proc/self/exe) with
 * argv[0] = NAME; then it sets its process name (comm) to NAME with
 * prctl(PR_SET_NAME), so ps, psutil's name() and /proc/PID/comm all say NAME, and
 * connects a TCP socket to HOST:PORT (IPv4). Prints
 *
 *   comm COMM connect 0|ERRNAME
 *
 * and exits 0 when the connect succeeded, 1 when it failed, 2 on a usage error. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sockaddr_in sin;
    char comm[32] = "";
    FILE *f;
    int fd;

    if (argc != 4) {
        fprintf(stderr, "usage: %s NAME HOST PORT\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[0], argv[1]) != 0) {
        char *again[] = {argv[1], argv[1], argv[2], argv[3], NULL};
        execv("/proc/self/exe", again);
        perror("execv /proc/self/exe");
        return 2;
    }
    if (prctl(PR_SET_NAME, argv[1], 0, 0, 0) != 0) {
        perror("prctl(PR_SET_NAME)");
        return 2;
    }
    f = fopen("/proc/self/comm", "r");
    if (f != NULL) {
        if (fgets(comm, sizeof comm, f) != NULL)
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &sin.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", argv[2]);
        return 2;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        int err = errno;
        printf("comm %s connect %s\n", comm, strerrorname_np(err) ? strerrorname_np(err)
                                                                  : "?");
        return 1;
    }
    printf("comm %s connect 0\n", comm);
    close(fd);
    return 0;
}
