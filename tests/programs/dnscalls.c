/* The DNS calls a program can make besides getaddrinfo(): the res_* family (each one a
 * DNS query to the configured name servers) and getaddrinfo_a(). One call per run; one
 * result line on stdout:
 *
 *   dnscalls query NAME                 res_query(NAME, IN, A)
 *   dnscalls search NAME                res_search(NAME, IN, TXT)
 *   dnscalls querydomain NAME DOMAIN    res_querydomain(NAME, DOMAIN, IN, A)
 *   dnscalls send NAME                  res_mkquery(A) + res_send()
 *   dnscalls nquery NAME                res_ninit() + res_nquery(NAME, IN, A)
 *     -> "CALL rc N h_errno H errno E"
 *   dnscalls gai-wait NAME PORT [PATH]      getaddrinfo_a(GAI_WAIT)
 *   dnscalls gai-nowait NAME PORT [PATH]    getaddrinfo_a(GAI_NOWAIT, SIGEV_THREAD),
 *                                           then gai_suspend() and the notification
 *     -> "gai ret R status S addr A notified N" and, with PATH, an HTTP/1.0 GET of
 *        PATH from the first address: "http STATUS-LINE" (or "http error ERRNO")
 *
 * Built with -lresolv -lanl -pthread (glibc >= 2.34 has them in libc.so.6). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <resolv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static unsigned char answer[4096];

static int report(const char *call, int rc)
{
    int herr = h_errno, err = errno;

    printf("%s rc %d h_errno %d errno %d\n", call, rc, herr, err);
    return 0;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int notified;

static void on_done(union sigval v)
{
    pthread_mutex_lock(&lock);
    notified = v.sival_int;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void http_get(const struct addrinfo *ai, const char *path)
{
    char req[512], line[256] = "";
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    ssize_t n;

    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        printf("http error %d\n", errno);
        return;
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: dnscalls\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        printf("http error %d\n", errno);
        close(fd);
        return;
    }
    n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n <= 0) {
        printf("http error %d\n", n < 0 ? errno : 0);
        return;
    }
    line[n] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    printf("http %s\n", line);
}

static int gai(int mode, const char *name, const char *port, const char *path)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct gaicb req = {.ar_name = name, .ar_service = port, .ar_request = &hints};
    struct gaicb *list[] = {&req};
    struct sigevent sev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_done,
                           .sigev_value = {.sival_int = 7}};
    char addr[INET6_ADDRSTRLEN] = "-";
    int ret, status;

    ret = getaddrinfo_a(mode, list, 1, mode == GAI_NOWAIT ? &sev : NULL);
    if (mode == GAI_NOWAIT && ret == 0) {
        const struct gaicb *wait_list[] = {&req};
        struct timespec limit = {.tv_sec = 60};
        struct timespec deadline;

        if (gai_suspend(wait_list, 1, &limit) != 0)
            fprintf(stderr, "gai_suspend: %s\n", gai_strerror(gai_error(&req)));
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 30;
        pthread_mutex_lock(&lock);
        while (!notified && pthread_cond_timedwait(&cond, &lock, &deadline) == 0)
            ;
        pthread_mutex_unlock(&lock);
    }
    status = gai_error(&req);
    if (status == 0 && req.ar_result != NULL) {
        struct sockaddr_in *in = (struct sockaddr_in *)req.ar_result->ai_addr;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
    }
    printf("gai ret %d status %d addr %s notified %d\n", ret, status, addr, notified);
    if (path != NULL && status == 0)
        http_get(req.ar_result, path);
    if (req.ar_result != NULL)
        freeaddrinfo(req.ar_result);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 2 ? argv[1] : "", *name = argc > 2 ? argv[2] : "";

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(cmd, "query") == 0)
        return report(cmd, res_query(name, ns_c_in, ns_t_a, answer, sizeof answer));
    if (strcmp(cmd, "search") == 0)
        return report(cmd, res_search(name, ns_c_in, ns_t_txt, answer, sizeof answer));
    if (strcmp(cmd, "querydomain") == 0 && argc > 3)
        return report(cmd, res_querydomain(name, argv[3], ns_c_in, ns_t_a, answer,
                                           sizeof answer));
    if (strcmp(cmd, "send") == 0) {
        unsigned char msg[512];
        int len = res_mkquery(ns_o_query, name, ns_c_in, ns_t_a, NULL, 0, NULL, msg,
                              sizeof msg);
        if (len < 0)
            return report("mkquery", len), 1;
        return report(cmd, res_send(msg, len, answer, sizeof answer));
    }
    if (strcmp(cmd, "nquery") == 0) {
        struct __res_state st;
        memset(&st, 0, sizeof st);
        if (res_ninit(&st) < 0)
            return report("ninit", -1), 1;
        report(cmd, res_nquery(&st, name, ns_c_in, ns_t_a, answer, sizeof answer));
        printf("nquery res_h_errno %d\n", st.res_h_errno);
        res_nclose(&st);
        return 0;
    }
    if ((strcmp(cmd, "gai-wait") == 0 || strcmp(cmd, "gai-nowait") == 0) && argc > 3)
        return gai(cmd[4] == 'w' ? GAI_WAIT : GAI_NOWAIT, name, argv[3],
                   argc > 4 ? argv[4] : NULL);
    fprintf(stderr, "usage: see the comment at the top of %s\n", __FILE__);
    return 2;
}
