/* The getaddrinfo_a() hooks: getaddrinfo_a, gai_suspend, gai_cancel and gai_error.
 * glibc's own getaddrinfo_a() resolves through internal calls LD_PRELOAD cannot catch,
 * so it is never called: each request is run through getaddrinfo() -- the shim's hook,
 * which asks the daemon -- in a helper thread (GAI_NOWAIT) or in the caller
 * (GAI_WAIT), and its ar_result and status (gaicb's __return, which glibc's gai_error
 * reads) are filled as glibc fills them. When a GAI_NOWAIT batch is done, the sigevent
 * is honoured as glibc does: SIGEV_NONE nothing, SIGEV_SIGNAL a sigqueue() to this
 * process, SIGEV_THREAD the function in a new thread (with the given attributes).
 * Since no request ever reaches glibc's queue, gai_suspend() and gai_cancel() are the
 * shim's too: they wait on (or report) the status of the shim's requests. A running
 * lookup cannot be cancelled (EAI_NOTCANCELED), and gai_suspend() is not woken by
 * signals (it never returns EAI_INTR). */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "log.h"
#include "socksify_wire.h"

/* One GAI_NOWAIT call: its notification, sent when the last of its requests is done. */
struct batch {
    struct sigevent sev;
    int notify;       /* 0: no sigevent given */
    int remaining;    /* requests running, plus one while they are being started */
    pid_t caller;
};

struct job {
    struct gaicb *req;
    struct batch *batch;
};

/* Every status change happens under this lock and is broadcast, for gai_suspend(). */
static pthread_mutex_t status_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t status_changed = PTHREAD_COND_INITIALIZER;

static int status_of(const struct gaicb *req)
{
    return __atomic_load_n(&req->__return, __ATOMIC_ACQUIRE);
}

static void set_status(struct gaicb *req, int status)
{
    pthread_mutex_lock(&status_lock);
    __atomic_store_n(&req->__return, status, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&status_changed);
    pthread_mutex_unlock(&status_lock);
}

/* One request through the shim's getaddrinfo() (the exported hook). */
static void run_request(struct gaicb *req)
{
    struct addrinfo *res = NULL;
    int r = getaddrinfo(req->ar_name, req->ar_service, req->ar_request, &res);

    req->ar_result = r == 0 ? res : NULL;
    set_status(req, r);
}

static void *notify_thread(void *arg)
{
    struct sigevent *sev = arg;

    sev->sigev_notify_function(sev->sigev_value);
    free(sev);
    return NULL;
}

/* The batch is done: its notification, then it is freed. */
static void finish(struct batch *b)
{
    if (b->notify && b->sev.sigev_notify == SIGEV_SIGNAL) {
        if (sigqueue(b->caller, b->sev.sigev_signo, b->sev.sigev_value) < 0)
            LOG_WARN("getaddrinfo_a: cannot send signal %d: %s", b->sev.sigev_signo,
                     socksify_strerror(errno));
    } else if (b->notify && b->sev.sigev_notify == SIGEV_THREAD) {
        struct sigevent *sev = malloc(sizeof *sev);
        pthread_attr_t detached, *attr = b->sev.sigev_notify_attributes;
        pthread_t t;
        int r = ENOMEM;

        if (sev != NULL) {
            *sev = b->sev;
            if (attr == NULL) {
                pthread_attr_init(&detached);
                pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
            }
            r = pthread_create(&t, attr != NULL ? attr : &detached, notify_thread, sev);
            if (attr == NULL)
                pthread_attr_destroy(&detached);
            if (r != 0)
                free(sev);
        }
        if (r != 0)
            LOG_WARN("getaddrinfo_a: cannot start the notification thread: %s",
                     socksify_strerror(r));
    }
    free(b);
}

static void release(struct batch *b)
{
    if (__atomic_sub_fetch(&b->remaining, 1, __ATOMIC_ACQ_REL) == 0)
        finish(b);
}

static void *job_thread(void *arg)
{
    struct job *job = arg;
    struct batch *b = job->batch;

    run_request(job->req);
    free(job);
    release(b);
    return NULL;
}

/* Start one request of a GAI_NOWAIT batch in a detached thread that blocks every
 * signal (the program's handlers run in its own threads); run it here if no thread
 * can be had. */
static void start_request(struct gaicb *req, struct batch *b)
{
    struct job *job = malloc(sizeof *job);
    sigset_t all, old;
    pthread_attr_t attr;
    pthread_t t;
    int r = ENOMEM;

    __atomic_add_fetch(&b->remaining, 1, __ATOMIC_ACQ_REL);
    if (job != NULL) {
        job->req = req;
        job->batch = b;
        sigfillset(&all);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&t, &attr, job_thread, job);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (r != 0) {
        LOG_DEBUG("getaddrinfo_a: no helper thread (%s); resolving in the caller",
                  socksify_strerror(r));
        free(job);
        run_request(req);
        release(b);
    }
}

static int socksify_getaddrinfo_a(int mode, struct gaicb *list[], int nitems,
                                  struct sigevent *sevp)
{
    struct batch *b;
    int count = 0;

    if (mode != GAI_WAIT && mode != GAI_NOWAIT) {
        errno = EINVAL;
        return EAI_SYSTEM;
    }
    for (int i = 0; i < nitems; i++)
        if (list[i] != NULL) {
            set_status(list[i], EAI_INPROGRESS);
            count++;
        }
    if (mode == GAI_WAIT) {
        for (int i = 0; i < nitems; i++)
            if (list[i] != NULL)
                run_request(list[i]);
        return 0;
    }
    if ((b = calloc(1, sizeof *b)) == NULL) {
        for (int i = 0; i < nitems; i++)
            if (list[i] != NULL)
                set_status(list[i], EAI_MEMORY);
        return EAI_MEMORY;
    }
    b->remaining = 1;  /* held until every request has been started */
    b->caller = getpid();
    if (sevp != NULL && count > 0) {
        b->sev = *sevp;
        b->notify = 1;
    }
    for (int i = 0; i < nitems; i++)
        if (list[i] != NULL)
            start_request(list[i], b);
    release(b);
    return 0;
}

SOCKSIFY_EXPORT int getaddrinfo_a(int mode, struct gaicb *list[], int nitems,
                                  struct sigevent *sevp)
{
    int saved_errno = errno, r;

    socksify_init();
    r = socksify_getaddrinfo_a(mode, list, nitems, sevp);
    if (r != EAI_SYSTEM)
        errno = saved_errno;
    return r;
}

SOCKSIFY_EXPORT int gai_error(struct gaicb *req)
{
    return status_of(req);
}

SOCKSIFY_EXPORT int gai_cancel(struct gaicb *req)
{
    return status_of(req) == EAI_INPROGRESS ? EAI_NOTCANCELED : EAI_ALLDONE;
}

SOCKSIFY_EXPORT int gai_suspend(const struct gaicb *const list[], int nitems,
                                const struct timespec *timeout)
{
    struct timespec deadline;
    int r = 0;

    if (timeout != NULL) {
        clock_gettime(CLOCK_REALTIME, &deadline);  /* the condition variable's clock */
        deadline.tv_sec += timeout->tv_sec;
        deadline.tv_nsec += timeout->tv_nsec;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&status_lock);
    for (int waited = 0;; waited = 1) {
        int pending = 0, done = 0;

        for (int i = 0; i < nitems; i++) {
            if (list[i] == NULL)
                continue;
            if (status_of(list[i]) == EAI_INPROGRESS)
                pending = 1;
            else
                done = 1;
        }
        if (!pending && !waited) {
            r = EAI_ALLDONE;  /* as glibc: nothing listed was in progress */
            break;
        }
        if (done || !pending) {
            r = 0;
            break;
        }
        if (timeout == NULL)
            pthread_cond_wait(&status_changed, &status_lock);
        else if (pthread_cond_timedwait(&status_changed, &status_lock, &deadline)
                 == ETIMEDOUT) {
            r = EAI_AGAIN;
            break;
        }
    }
    pthread_mutex_unlock(&status_lock);
    return r;
}
