/* connect() while a signal arrives every millisecond.
 *
 *   sigconnect restart|norestart N HOST PORT NBYTES
 *
 * SIGALRM's handler is installed with SA_RESTART or without it, and setitimer() fires
 * it every 1 ms for the whole run. N times: a blocking socket connects to the echo
 * server and exchanges NBYTES (seed = i). A connect() that fails with EINTR is handled
 * as on Linux without socksify: the connection goes on in the background, so the
 * program calls connect() again (on a blocking socket it waits again: 0 once done, or
 * EINTR again; EALREADY on a non-blocking one; EISCONN if it was already done), then,
 * unless that finished it, waits for POLLOUT and reads SO_ERROR. Lines:
 *
 *   c I rc ERRNAME again ERRNAME signals K reply REPLY
 *
 * (K: signals handled during this connect(); "again": the second connect()'s errno, or
 * "-"), then "signals TOTAL". Exit status 0 when every exchange got a reply. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/time.h>

#include "shapes_common.h"

static volatile sig_atomic_t signals;

static void on_alarm(int sig)
{
    (void)sig;
    signals++;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct itimerval every_ms = {{0, 1000}, {0, 1000}}, off = {{0, 0}, {0, 0}};
    int n, port, failed = 0;
    const char *host;
    uint64_t nbytes;

    if (argc != 6) {
        fprintf(stderr, "usage: %s restart|norestart N HOST PORT NBYTES\n", argv[0]);
        return 2;
    }
    n = atoi(argv[2]);
    host = argv[3];
    port = atoi(argv[4]);
    nbytes = strtoull(argv[5], NULL, 10);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = strcmp(argv[1], "restart") == 0 ? SA_RESTART : 0;
    if (sigaction(SIGALRM, &sa, NULL) < 0 || setitimer(ITIMER_REAL, &every_ms, NULL) < 0)
        return 3;

    for (int i = 0; i < n; i++) {
        struct sockaddr_in a;
        char reply[256] = "";
        const char *again = "-";
        int fd, rc, before;

        make_addr(host, port, &a);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return 4;
        before = signals;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
        int during = signals - before;
        if (rc == -EINTR) {
            /* in progress in the background, as for a real connect */
            int r2 = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
            again = errname(-r2);
            if (r2 == -EALREADY || r2 == -EINTR)
                r2 = finish_connect(fd, 60000);
            else if (r2 == -EISCONN)
                r2 = 0;
            rc = r2 == 0 ? -EINTR : r2;  /* report EINTR, then the outcome below */
        }
        int ok = rc == 0 || rc == -EINTR;
        if (ok)
            ok = echo_exchange(fd, nbytes, (unsigned)i, reply, sizeof reply) == 0;
        printf("c %d rc %s again %s signals %d reply %s\n", i, errname(-rc), again, during,
               reply[0] ? reply : "-");
        fflush(stdout);
        failed |= !ok;
        close(fd);
    }
    setitimer(ITIMER_REAL, &off, NULL);
    printf("signals %d\n", (int)signals);
    return failed;
}
