/* A program that tramples on fds it does not know between its connects.
 *
 *   fdclobber dup2|close ROUNDS TOP ECHO_HOST ECHO_PORT WITNESS_HOST WITNESS_PORT NBYTES
 *
 * Each round: one echo exchange (NBYTES of the pattern, seed = round), one connect to
 * the witness; then dup2 /dev/null over every fd from 3 to TOP, or close every fd from 3
 * up to the open-file limit -- anything the shim might keep goes with it. Lines:
 *
 *   round R rc ERRNAME witness ERRNAME fd FD reply REPLY
 *
 * (rc: the echo exchange; witness: the witness connect; FD: the witness socket's fd.)
 *
 * Exit status 0 when every step succeeded. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/resource.h>

#include "shapes_common.h"

int main(int argc, char **argv)
{
    int rounds, top, echo_port, witness_port, failed = 0;
    const char *mode, *echo_host, *witness_host;
    uint64_t nbytes;
    struct rlimit rl;

    if (argc != 9) {
        fprintf(stderr, "usage: %s dup2|close ROUNDS TOP ECHO_HOST ECHO_PORT WITNESS_HOST "
                "WITNESS_PORT NBYTES\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    rounds = atoi(argv[2]);
    top = atoi(argv[3]);
    echo_host = argv[4];
    echo_port = atoi(argv[5]);
    witness_host = argv[6];
    witness_port = atoi(argv[7]);
    nbytes = strtoull(argv[8], NULL, 10);
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 3;

    for (int r = 0; r < rounds; r++) {
        char reply[256] = "";
        int erc, wrc, wfd;

        erc = echo_once(echo_host, echo_port, nbytes, (unsigned)r, reply, sizeof reply);
        wfd = tcp_connect(witness_host, witness_port);
        wrc = wfd < 0 ? wfd : write_all(wfd, "hello\n", 6);
        printf("round %d rc %s witness %s fd %d reply %s\n", r, errname(-erc),
               errname(-wrc), wfd, reply[0] ? reply : "-");
        fflush(stdout);
        if (wfd >= 0)
            close(wfd);
        failed |= erc != 0 || wrc != 0;

        if (strcmp(mode, "dup2") == 0) {
            int null = open("/dev/null", O_RDWR);
            if (null < 0)
                return 4;
            for (int fd = 3; fd <= top; fd++)
                if (fd != null && dup2(null, fd) < 0)
                    return 5;
            if (null > top)
                close(null);
        } else {
            for (long fd = 3; fd < (long)rl.rlim_cur; fd++)
                close((int)fd);
        }
    }
    return failed;
}
