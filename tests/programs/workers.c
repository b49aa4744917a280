/* N workers connect at once, each ROUNDS times, to the echo server, as threads or as
 * processes forked after start-up (a pre-fork server's shape).
 *
 *   workers threads|fork N ROUNDS HOST PORT NBYTES
 *
 * Threads wait at a barrier; forked workers wait until the parent closes the pipe they
 * read (the starting gun), so all N connect at the same moment. Worker i's round r
 * sends NBYTES of the pattern with seed i * ROUNDS + r. One line per round on stdout
 * (written whole, so lines of several processes do not mix):
 *
 *   w I r R pid PID rc ERRNAME reply REPLY
 *
 * Exit status 0 when every round got a reply. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/wait.h>

#include "shapes_common.h"

static int rounds, port;
static const char *host;
static uint64_t nbytes;
static pthread_barrier_t barrier;

static int work(int i)
{
    int failed = 0;

    for (int r = 0; r < rounds; r++) {
        char reply[256] = "", line[400];
        int rc = echo_once(host, port, nbytes, (unsigned)(i * rounds + r), reply,
                           sizeof reply);
        int n = snprintf(line, sizeof line, "w %d r %d pid %d rc %s reply %s\n", i, r,
                         (int)getpid(), errname(-rc), reply[0] ? reply : "-");
        (void)!write(STDOUT_FILENO, line, (size_t)n);
        failed |= rc != 0;
    }
    return failed;
}

static void *thread_main(void *arg)
{
    pthread_barrier_wait(&barrier);
    return (void *)(intptr_t)work((int)(intptr_t)arg);
}

int main(int argc, char **argv)
{
    int n, failed = 0;

    if (argc != 7) {
        fprintf(stderr, "usage: %s threads|fork N ROUNDS HOST PORT NBYTES\n", argv[0]);
        return 2;
    }
    n = atoi(argv[2]);
    rounds = atoi(argv[3]);
    host = argv[4];
    port = atoi(argv[5]);
    nbytes = strtoull(argv[6], NULL, 10);

    if (strcmp(argv[1], "threads") == 0) {
        pthread_t *t = calloc((size_t)n, sizeof *t);
        pthread_attr_t attr;

        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        pthread_barrier_init(&barrier, NULL, (unsigned)n);
        for (int i = 0; i < n; i++)
            if (pthread_create(&t[i], &attr, thread_main, (void *)(intptr_t)i) != 0) {
                fprintf(stderr, "pthread_create failed at %d\n", i);
                return 3;
            }
        for (int i = 0; i < n; i++) {
            void *ret;
            pthread_join(t[i], &ret);
            failed |= ret != NULL;
        }
        return failed;
    }
    /* fork: the gun is a pipe whose write end the parent closes */
    int gun[2];
    pid_t *pids = calloc((size_t)n, sizeof *pids);

    if (pipe(gun) < 0)
        return 3;
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 3;
        if (pids[i] == 0) {
            char c;
            close(gun[1]);
            while (read(gun[0], &c, 1) < 0 && errno == EINTR)
                ;
            close(gun[0]);
            _exit(work(i));
        }
    }
    close(gun[0]);
    close(gun[1]);
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status)
            || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    return failed;
}
