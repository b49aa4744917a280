/* A program that daemonizes the classic way, then connects.
 *
 *   daemonize RESULT HOW STDIO ECHO_HOST ECHO_PORT WITNESS_HOST WITNESS_PORT NBYTES SEED
 *
 * fork; the child calls setsid() and forks again; the grandchild (the daemon) changes
 * to /, and closes every fd it has -- whatever the shim might hold too -- with
 * HOW = close_range (close_range(0, ~0U, 0)) or loop (close() on every fd below the
 * open-file limit). STDIO = devnull reopens /dev/null on 0, 1 and 2 (daemon(3));
 * STDIO = sockets leaves them closed and opens two sockets first, so that the socket it
 * connects lands on fd 2, where stderr was. Then it connects twice to the echo server
 * (NBYTES of the SEED pattern, then SEED+1) and once to the witness, and appends one
 * line per step to RESULT (opened after the close):
 *
 *   pid PID
 *   fds N                      fds open right after the close (and the reopening)
 *   echo K fd FD rc ERRNAME reply REPLY
 *   witness fd FD rc ERRNAME
 *   done
 *
 * The first process waits for "done" in RESULT before it exits (at most
 * $DAEMONIZE_WAIT seconds, default 90; exit status 4 if it never comes), so a socksify
 * session that started it outlives the daemon's connects. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "shapes_common.h"

static const char *result_path;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int fd, n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    fd = open(result_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    (void)!write(fd, line, (size_t)n);
    close(fd);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;  /* the directory's own fd */
}

static int waited_for_done(int seconds)
{
    char buf[4096];

    for (int i = 0; i < seconds * 20; i++) {
        int fd = open(result_path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                buf[n] = '\0';
                if (strstr(buf, "\ndone\n") != NULL)
                    return 1;
            }
        }
        usleep(50000);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *how, *stdio_mode, *echo_host, *witness_host;
    int echo_port, witness_port, fd;
    unsigned seed;
    uint64_t nbytes;
    pid_t pid;

    if (argc != 10) {
        fprintf(stderr, "usage: %s RESULT HOW STDIO ECHO_HOST ECHO_PORT WITNESS_HOST "
                "WITNESS_PORT NBYTES SEED\n", argv[0]);
        return 2;
    }
    result_path = argv[1];
    how = argv[2];
    stdio_mode = argv[3];
    echo_host = argv[4];
    echo_port = atoi(argv[5]);
    witness_host = argv[6];
    witness_port = atoi(argv[7]);
    nbytes = strtoull(argv[8], NULL, 10);
    seed = (unsigned)atoi(argv[9]);

    pid = fork();
    if (pid < 0)
        return 3;
    if (pid > 0) {
        int status;
        waitpid(pid, &status, 0);  /* the middle process exits at once */
        const char *wait_s = getenv("DAEMONIZE_WAIT");
        return waited_for_done(wait_s != NULL ? atoi(wait_s) : 90) ? 0 : 4;
    }
    if (setsid() < 0)
        _exit(5);
    pid = fork();
    if (pid < 0)
        _exit(6);
    if (pid > 0)
        _exit(0);

    /* the daemon */
    if (chdir("/") < 0)
        _exit(7);
    umask(022);
    if (strcmp(how, "close_range") == 0) {
        if (syscall(SYS_close_range, 0U, ~0U, 0U) < 0)
            _exit(8);
    } else {
        struct rlimit rl;
        long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                   ? (long)rl.rlim_cur : 65536;
        for (long i = 0; i < max; i++)
            close((int)i);
    }
    if (strcmp(stdio_mode, "devnull") == 0) {
        for (int i = 0; i < 3; i++)
            if (open("/dev/null", O_RDWR) != i)
                _exit(9);
    } else {
        /* fds 0 and 1: two sockets; the one connected below gets fd 2 */
        if (socket(AF_INET, SOCK_STREAM, 0) != 0 || socket(AF_INET, SOCK_STREAM, 0) != 1)
            _exit(10);
    }
    say("pid %d", (int)getpid());
    say("fds %d", count_fds());

    for (int k = 0; k < 2; k++) {
        char reply[256] = "";
        struct sockaddr_in a;
        int r;

        make_addr(echo_host, echo_port, &a);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        r = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
        if (r == 0)
            r = echo_exchange(fd, nbytes, seed + (unsigned)k, reply, sizeof reply);
        say("echo %d fd %d rc %s reply %s", k, fd, errname(-r), reply[0] ? reply : "-");
        close(fd);
    }
    {
        struct sockaddr_in a;
        int r;

        make_addr(witness_host, witness_port, &a);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        r = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ? -errno : 0;
        if (r == 0)
            r = write_all(fd, "hello\n", 6);
        say("witness fd %d rc %s", fd, errname(-r));
        close(fd);
    }
    say("done");
    _exit(0);
}
