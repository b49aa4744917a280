/* An exec chain in one process: execv, then fexecve with an empty environment, then
 * execle with a made-up one, then connect.
 *
 *   execchain SELF 0 ECHO_HOST ECHO_PORT WITNESS_HOST WITNESS_PORT NBYTES
 *
 * SELF is this program's absolute path. Stage 0 execv()s stage 1; stage 1 fexecve()s
 * stage 2 with envp = {NULL}; stage 2 execle()s stage 3 with only PATH; stage 3 does
 * one echo exchange (seed 3) and one connect to the witness. Each stage prints
 *
 *   stage S pid PID preload yes|no
 *
 * and stage 3 then "echo 0 rc ERRNAME reply REPLY" and "witness 0 rc ERRNAME". */
#define _GNU_SOURCE
#include <fcntl.h>

#include "shapes_common.h"

int main(int argc, char **argv)
{
    char next[12];
    int stage;

    if (argc != 8) {
        fprintf(stderr, "usage: %s SELF STAGE ECHO_HOST ECHO_PORT WITNESS_HOST "
                "WITNESS_PORT NBYTES\n", argv[0]);
        return 2;
    }
    stage = atoi(argv[2]);
    printf("stage %d pid %d preload %s\n", stage, (int)getpid(),
           getenv("LD_PRELOAD") != NULL && strstr(getenv("LD_PRELOAD"), "socksify")
           ? "yes" : "no");
    fflush(stdout);
    snprintf(next, sizeof next, "%d", stage + 1);
    argv[2] = next;
    if (stage == 0) {
        execv(argv[1], argv);
        perror("execv");
        return 10;
    }
    if (stage == 1) {
        char *empty[] = {NULL};
        int fd = open(argv[1], O_RDONLY);  /* no O_CLOEXEC: not a #! script */
        if (fd < 0)
            return 11;
        fexecve(fd, argv, empty);
        perror("fexecve");
        return 12;
    }
    if (stage == 2) {
        char *env[] = {"PATH=/usr/bin:/bin", NULL};
        execle(argv[1], argv[0], argv[1], next, argv[3], argv[4], argv[5], argv[6],
               argv[7], (char *)NULL, env);
        perror("execle");
        return 13;
    }
    char reply[256] = "";
    int erc = echo_once(argv[3], atoi(argv[4]), strtoull(argv[7], NULL, 10), 3, reply,
                        sizeof reply);
    int wfd = tcp_connect(argv[5], atoi(argv[6]));
    int wrc = wfd < 0 ? wfd : write_all(wfd, "hello\n", 6);
    printf("echo 0 rc %s reply %s\nwitness 0 rc %s\n", errname(-erc), reply[0] ? reply : "-",
           errname(-wrc));
    return erc != 0 || wrc != 0;
}
