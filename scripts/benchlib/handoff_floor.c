/* The handoff floor, for scripts/bench.py: the least any daemon can do for the shim's
 * HANDOFF (docs/wire.md), in C, with nothing else. It reads each request and the
 * program's socket, connects that socket to hop 1, writes every hop's SOCKS4 CONNECT at
 * once, reads and checks the replies and answers READY. One epoll loop; no policy, no
 * process lookup, no log, no live table, and no check of its peers' uids.
 *
 * bench.py runs the client under the real shim against it. That gives the floor of the
 * design (a program, the shim, a round trip to a daemon, the chain) whatever the
 * daemon is written in. It is the handoff path's counterpart of the "ideal prebuilt"
 * client: what socksify's handoff could reach at best. It is a measuring tool, not part
 * of socksify: it serves one fixed chain to one trusted client in the bench's lab.
 *
 *     handoff_floor SOCKET_PATH A.B.C.D:PORT[,A.B.C.D:PORT...]
 *
 * The hops speak SOCKS4. It answers any other request FAIL (EPROTO) and says so on
 * stderr. A hop that refuses or breaks the protocol fails the connect (ECONNREFUSED).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "socksify_wire.h"

#define MAX_HOPS 8
#define SOCKS4_REPLY 8

static struct sockaddr_in hops[MAX_HOPS];
static int n_hops;

/* One handoff in flight: the program's socket (our copy), its control connection. */
struct handoff {
    int app;
    int control;
    uint8_t requests[MAX_HOPS * 9];
    size_t request_len;
    size_t sent;
    uint8_t replies[MAX_HOPS * SOCKS4_REPLY];
    size_t got;
    int connected;
};

/* epoll's data: a control connection (tag 0) or a handoff (tag 1). */
struct watch {
    int tag;
    int fd;
    struct handoff *h;
};

static int ep;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void answer(int control, uint8_t verdict, uint8_t code)
{
    uint8_t reply[SOCKSIFY_REPLY_SIZE] = {0};
    memcpy(reply, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE);
    reply[SOCKSIFY_REP_OFF_VERSION] = SOCKSIFY_WIRE_VERSION;
    reply[SOCKSIFY_REP_OFF_VERDICT] = verdict;
    reply[SOCKSIFY_REP_OFF_CODE] = code;
    if (send(control, reply, sizeof reply, MSG_NOSIGNAL) != (ssize_t)sizeof reply)
        perror("handoff_floor: answer");
}

static void finish(struct watch *w, int ok)
{
    struct handoff *h = w->h;
    epoll_ctl(ep, EPOLL_CTL_DEL, h->app, NULL);
    close(h->app);     /* before the answer, as docs/wire.md says the daemon does */
    answer(h->control, ok ? SOCKSIFY_VERDICT_READY : SOCKSIFY_VERDICT_FAIL,
           ok ? SOCKSIFY_CODE_NONE : SOCKSIFY_CODE_CONNREFUSED);
    free(h);
    free(w);
}

/* Write what is left of the requests; then wait for the replies. */
static void send_requests(struct watch *w)
{
    struct handoff *h = w->h;
    while (h->sent < h->request_len) {
        ssize_t n = send(h->app, h->requests + h->sent, h->request_len - h->sent,
                         MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            finish(w, 0);
            return;
        }
        h->sent += (size_t)n;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    epoll_ctl(ep, EPOLL_CTL_MOD, h->app, &ev);
}

/* Read exactly the replies (nothing of the program's data behind them). */
static void read_replies(struct watch *w)
{
    struct handoff *h = w->h;
    size_t want = (size_t)n_hops * SOCKS4_REPLY;
    while (h->got < want) {
        ssize_t n = recv(h->app, h->replies + h->got, want - h->got, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            finish(w, 0);
            return;
        }
        h->got += (size_t)n;
    }
    for (int i = 0; i < n_hops; i++) {
        const uint8_t *r = h->replies + i * SOCKS4_REPLY;
        if (r[0] != 0 || r[1] != 90) {
            finish(w, 0);
            return;
        }
    }
    finish(w, 1);
}

static void start_handoff(int control, int app, const uint8_t *req)
{
    struct handoff *h = calloc(1, sizeof *h);
    struct watch *w = calloc(1, sizeof *w);
    if (!h || !w)
        die("calloc");
    h->app = app;
    h->control = control;
    /* hop i's request names hop i+1, the last one names the destination */
    for (int i = 0; i < n_hops; i++) {
        uint8_t *q = h->requests + h->request_len;
        q[0] = 4;
        q[1] = 1;
        if (i + 1 < n_hops) {
            memcpy(q + 2, &hops[i + 1].sin_port, 2);
            memcpy(q + 4, &hops[i + 1].sin_addr, 4);
        } else {
            memcpy(q + 2, req + SOCKSIFY_REQ_OFF_PORT, 2);
            memcpy(q + 4, req + SOCKSIFY_REQ_OFF_ADDR, 4);
        }
        q[8] = 0;      /* an empty user id */
        h->request_len += 9;
    }
    w->tag = 1;
    w->fd = app;
    w->h = h;
    int flags = fcntl(app, F_GETFL);
    fcntl(app, F_SETFL, flags | O_NONBLOCK);   /* the shim restores the program's */
    int rc = connect(app, (struct sockaddr *)&hops[0], sizeof hops[0]);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = w};
    if (rc < 0 && errno != EINPROGRESS) {
        close(app);
        answer(control, SOCKSIFY_VERDICT_FAIL, SOCKSIFY_CODE_CONNREFUSED);
        free(h);
        free(w);
        return;
    }
    if (epoll_ctl(ep, EPOLL_CTL_ADD, app, &ev) < 0)
        die("epoll_ctl");
    if (rc == 0) {
        h->connected = 1;
        send_requests(w);
    }
}

static void on_request(struct watch *w)
{
    uint8_t req[SOCKSIFY_REQUEST_SIZE];
    char cbuf[CMSG_SPACE(sizeof(int) * 2)];
    struct iovec iov = {.iov_base = req, .iov_len = sizeof req};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(w->fd, &msg, MSG_CMSG_CLOEXEC);
    int app = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&app, CMSG_DATA(c), sizeof app);
    if (n != (ssize_t)sizeof req) {   /* closed, or not one whole request */
        if (app >= 0)
            close(app);
        epoll_ctl(ep, EPOLL_CTL_DEL, w->fd, NULL);
        close(w->fd);
        free(w);
        return;
    }
    uint8_t op = req[SOCKSIFY_REQ_OFF_OP];
    if (op != SOCKSIFY_OP_HANDOFF || app < 0
        || req[SOCKSIFY_REQ_OFF_FAMILY] != SOCKSIFY_FAMILY_INET) {
        fprintf(stderr, "handoff_floor: op %u family %u: not an IPv4 HANDOFF\n", op,
                req[SOCKSIFY_REQ_OFF_FAMILY]);
        if (app >= 0)
            close(app);
        answer(w->fd, SOCKSIFY_VERDICT_FAIL, SOCKSIFY_CODE_PROTO);
        return;
    }
    start_handoff(w->fd, app, req);
}

static void parse_hops(char *list)
{
    for (char *item = strtok(list, ","); item; item = strtok(NULL, ",")) {
        char *colon = strrchr(item, ':');
        if (!colon || n_hops == MAX_HOPS) {
            fprintf(stderr, "handoff_floor: bad hop %s\n", item);
            exit(2);
        }
        *colon = '\0';
        hops[n_hops].sin_family = AF_INET;
        hops[n_hops].sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, item, &hops[n_hops].sin_addr) != 1) {
            fprintf(stderr, "handoff_floor: bad address %s\n", item);
            exit(2);
        }
        n_hops++;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: handoff_floor SOCKET_PATH A.B.C.D:PORT[,...]\n");
        return 2;
    }
    parse_hops(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof sun.sun_path) {
        fprintf(stderr, "handoff_floor: socket path too long\n");
        return 2;
    }
    strcpy(sun.sun_path, argv[1]);
    unlink(argv[1]);
    if (listener < 0 || bind(listener, (struct sockaddr *)&sun, sizeof sun) < 0
        || listen(listener, 128) < 0)
        die("handoff_floor: listen");
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct watch lw = {.tag = 2, .fd = listener};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lw};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) < 0)
        die("handoff_floor: epoll");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct epoll_event events[64];
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct watch *w = events[i].data.ptr;
            if (w->tag == 2) {
                int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                struct watch *cw = calloc(1, sizeof *cw);
                if (!cw)
                    die("calloc");
                cw->tag = 0;
                cw->fd = c;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = cw};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            } else if (w->tag == 0) {
                on_request(w);
            } else if (!w->h->connected) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    finish(w, 0);
                    continue;
                }
                w->h->connected = 1;
                send_requests(w);
            } else if (w->h->sent < w->h->request_len) {
                send_requests(w);
            } else {
                read_replies(w);
            }
        }
    }
}
