/* getaddrinfo_a()'s contract, for the same output with and without the shim (glibc
 * 2.36's own implementation crashes now and then under "rounds": see
 * tests/unit/test_dns_calls_shim.py):
 *
 *   gaicheck rounds          5 GAI_NOWAIT batches of 200 requests (numeric names and
 *                            localhost), reaped with gai_suspend()/gai_error(), each
 *                            batch notified by SIGEV_SIGNAL with its own value; then
 *                            GAI_WAIT, gai_suspend() on a finished request, a bad mode
 *   gaicheck pending NAME    one GAI_NOWAIT request that stays in progress (the test
 *                            holds the daemon's answer back): gai_suspend() with a
 *                            timeout, gai_cancel(), then gai_suspend() until it ends
 *
 * One line per check on stdout. */
#define _GNU_SOURCE
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define N 200

static volatile sig_atomic_t signalled;

static void on_signal(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    signalled = si->si_value.sival_int;
}

static int rounds(void)
{
    static struct gaicb reqs[N];
    struct gaicb *list[N];
    struct sigaction sa = {.sa_sigaction = on_signal, .sa_flags = SA_SIGINFO};
    struct timespec tiny = {0, 1};
    struct gaicb one = {.ar_name = "localhost"}, *single[] = {&one};

    sigaction(SIGUSR1, &sa, NULL);
    for (int round = 1; round <= 5; round++) {
        struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1,
                               .sigev_value.sival_int = round};
        int done = 0, failed = 0, r;

        memset(reqs, 0, sizeof reqs);
        for (int i = 0; i < N; i++) {
            reqs[i].ar_name = i % 3 == 0 ? "127.0.0.1" : i % 3 == 1 ? "::1" : "localhost";
            list[i] = &reqs[i];
        }
        signalled = 0;
        if ((r = getaddrinfo_a(GAI_NOWAIT, list, N, &sev)) != 0) {
            printf("round %d getaddrinfo_a %d\n", round, r);
            return 1;
        }
        while (done < N) {
            struct timespec limit = {10, 0};

            r = gai_suspend((const struct gaicb *const *)list, N, &limit);
            if (r != 0 && r != EAI_ALLDONE) {
                printf("round %d gai_suspend %d\n", round, r);
                return 1;
            }
            for (int i = 0; i < N; i++) {
                if (list[i] == NULL || gai_error(list[i]) == EAI_INPROGRESS)
                    continue;
                failed += gai_error(list[i]) != 0 || list[i]->ar_result == NULL;
                freeaddrinfo(list[i]->ar_result);
                list[i] = NULL;
                done++;
            }
        }
        for (int k = 0; k < 5000 && signalled != round; k++)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        printf("round %d done %d failed %d signal %d\n", round, done, failed,
               (int)signalled);
    }
    printf("wait ret %d", getaddrinfo_a(GAI_WAIT, single, 1, NULL));
    printf(" status %d", gai_error(&one));
    printf(" suspend-after %d", gai_suspend((const struct gaicb *const *)single, 1, &tiny));
    printf(" bad-mode %d\n", getaddrinfo_a(7, single, 1, NULL));
    freeaddrinfo(one.ar_result);
    return 0;
}

static int pending(const char *name)
{
    struct gaicb req = {.ar_name = name, .ar_service = "80"}, *list[] = {&req};
    const struct gaicb *const wait_list[] = {&req};
    struct sigevent sev = {.sigev_notify = SIGEV_NONE};
    struct timespec short_wait = {0, 200 * 1000 * 1000};

    printf("ret %d\n", getaddrinfo_a(GAI_NOWAIT, list, 1, &sev));
    printf("inprogress %d\n", gai_error(&req) == EAI_INPROGRESS);
    printf("suspend-timeout %d\n", gai_suspend(wait_list, 1, &short_wait));
    printf("cancel %d\n", gai_cancel(&req));
    printf("suspend %d\n", gai_suspend(wait_list, 1, NULL));
    printf("status %d\n", gai_error(&req));
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "rounds") == 0)
        return rounds();
    if (argc == 3 && strcmp(argv[1], "pending") == 0)
        return pending(argv[2]);
    fprintf(stderr, "usage: gaicheck rounds | gaicheck pending NAME\n");
    return 2;
}
