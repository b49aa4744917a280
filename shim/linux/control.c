/* One request/reply exchange with the daemon over a kept control connection
 * (ctlconn.h, docs/wire.md), and the relay ports last seen. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "ctlconn.h"
#include "io.h"
#include "log.h"
#include "real.h"

/* A PEERNAME or NAMEOF query is local bookkeeping in the daemon: it never needs the
 * long SOCKSIFY_TIMEOUT a CONNECT may need to build a chain. */
#define PEERNAME_TIMEOUT_MS 5000

/* relay_port4 << 16 | relay_port6 of the last RELAY reply, 0 if none. */
static uint32_t relay_ports;

void socksify_relay_ports_note(uint16_t port4, uint16_t port6)
{
    __atomic_store_n(&relay_ports, (uint32_t)port4 << 16 | port6, __ATOMIC_RELAXED);
}

void socksify_relay_ports(uint16_t *port4, uint16_t *port6)
{
    uint32_t ports = __atomic_load_n(&relay_ports, __ATOMIC_RELAXED);

    *port4 = (uint16_t)(ports >> 16);
    *port6 = (uint16_t)ports;
}

/* One recvmsg() that keeps a descriptor passed with the bytes in *passed (the first
 * one; any other is closed), or a plain recv() when passed is NULL. */
static ssize_t recv_some(int fd, uint8_t *buf, size_t len, int *passed)
{
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cmsg;
    ssize_t n;

    if (passed == NULL)
        return socksify_real.recv(fd, buf, len, 0);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    n = socksify_real.recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        size_t i, count;

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
            continue;
        count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < count; i++) {
            int got;

            memcpy(&got, CMSG_DATA(cmsg) + i * sizeof(int), sizeof got);
            if (*passed < 0)
                *passed = got;
            else
                SOCKSIFY_REAL_HOT(close)(got);
        }
    }
    return n;
}

static int recv_all_fd(int fd, uint8_t *buf, size_t len, int64_t deadline, int level,
                       int *passed)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv_some(fd, buf + got, len - got, passed);

        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            SOCKSIFY_LOG_AT(level, "the daemon closed the control connection after %zu of "
                            "%zu reply bytes", got, len);
            return -EPROTO;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int r = socksify_wait_fd(fd, POLLIN, deadline);
            if (r < 0)
                return r;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

static int recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline, int level)
{
    return recv_all_fd(fd, buf, len, deadline, level, NULL);
}

/* Send the request with app_fd attached (SCM_RIGHTS) with the first byte. */
static int send_with_fd(int fd, const uint8_t *request, size_t len, int app_fd,
                        int64_t deadline)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = (void *)request, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cmsg;

    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &app_fd, sizeof app_fd);
    for (;;) {
        ssize_t n = socksify_real.sendmsg(fd, &msg, MSG_NOSIGNAL);
        int r;

        if (n >= 0)
            return (size_t)n == len ? 0
                : socksify_send_all(fd, request + n, len - (size_t)n, deadline);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        if ((r = socksify_wait_fd(fd, POLLOUT, deadline)) < 0)
            return r;
    }
}

/* The name that follows a NAME reply's head, when the caller has room for one: read
 * body_len more bytes after the head. Returns the reply's whole length, or -errno. */
static int recv_body(int fd, uint8_t *reply, size_t replymax, int64_t deadline, int level)
{
    size_t body_len;
    int r;

    if (replymax <= SOCKSIFY_REPLY_SIZE
        || memcmp(reply, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE) != 0
        || reply[SOCKSIFY_REP_OFF_VERSION] != SOCKSIFY_WIRE_VERSION
        || (reply[SOCKSIFY_REP_OFF_VERDICT] != SOCKSIFY_VERDICT_NAME
            && reply[SOCKSIFY_REP_OFF_VERDICT] != SOCKSIFY_VERDICT_WRAP))
        return SOCKSIFY_REPLY_SIZE;  /* no body: the caller decodes (and judges) the head */
    /* NAME and WRAP both give body_len in bytes 10-11 */
    body_len = (size_t)reply[SOCKSIFY_NAME_OFF_BODY_LEN] << 8
               | reply[SOCKSIFY_NAME_OFF_BODY_LEN + 1];
    if (body_len > replymax - SOCKSIFY_REPLY_SIZE) {
        SOCKSIFY_LOG_AT(level, "the daemon announces a %zu-byte body, more than the %zu "
                        "a reply may carry", body_len, replymax - SOCKSIFY_REPLY_SIZE);
        return -EPROTO;
    }
    if ((r = recv_all(fd, reply + SOCKSIFY_REPLY_SIZE, body_len, deadline, level)) < 0)
        return r;
    return (int)(SOCKSIFY_REPLY_SIZE + body_len);
}

/* Send the request (with app_fd attached, if any) on fd and read the reply: 0 or the
 * reply's length, or -errno. `last`: no request follows on fd. */
static int exchange_on(int fd, const char *path,
                       const uint8_t *request, size_t len, uint8_t *reply,
                       size_t replymax, int64_t deadline, int level, int app_fd,
                       int *passed, int last)
{
    int r;

    r = app_fd >= 0 ? send_with_fd(fd, request, len, app_fd, deadline)
                    : socksify_send_all(fd, request, len, deadline);
    if (r < 0) {
        SOCKSIFY_LOG_AT(r == -EPIPE ? SOCKSIFY_LOG_DEBUG : level,
                        "cannot send the request to %s: %s", path, socksify_strerror(-r));
        return r;
    }
    if (last)   /* a connection of its own: the daemon closes it after the reply */
        shutdown(fd, SHUT_WR);
    if ((r = recv_all_fd(fd, reply, SOCKSIFY_REPLY_SIZE, deadline, level, passed)) < 0
        || (r = recv_body(fd, reply, replymax, deadline, level)) < 0) {
        if (r != -EPROTO)
            SOCKSIFY_LOG_AT(r == -ECONNRESET ? SOCKSIFY_LOG_DEBUG : level,
                            "no reply from the daemon at %s: %s", path,
                            socksify_strerror(-r));
        return r;
    }
    return r;
}

/* One request and its reply on a kept control connection (ctlconn.h). A kept
 * connection the daemon closed (idle, or stopped and started again) before it read the
 * request is replaced once and the request sent again; any other failure fails the
 * request (the caller fails closed). */
static int send_reply_fd(const uint8_t *request,
                         size_t len, uint8_t *reply, size_t replymax, int app_fd,
                         int *passed)
{
    const struct socksify_config *cfg = socksify_config();
    unsigned op = len > SOCKSIFY_REQ_OFF_OP ? request[SOCKSIFY_REQ_OFF_OP] : 0;
    int level = op == SOCKSIFY_OP_PEERNAME ? SOCKSIFY_LOG_DEBUG : SOCKSIFY_LOG_WARN;
    int timeout_ms = cfg->timeout_ms;
    int64_t deadline;
    int attempt, fd, r = -ECONNREFUSED, reused, slot;

    if (len < SOCKSIFY_REQUEST_SIZE || replymax < SOCKSIFY_REPLY_SIZE)
        return -EINVAL;
    if ((op == SOCKSIFY_OP_PEERNAME || op == SOCKSIFY_OP_NAMEOF)
        && timeout_ms > PEERNAME_TIMEOUT_MS)
        timeout_ms = PEERNAME_TIMEOUT_MS;
    deadline = socksify_now_ms() + timeout_ms;
    for (attempt = 0; attempt < 2; attempt++) {
        if ((fd = socksify_ctlconn_take(deadline, level, &reused, &slot)) < 0)
            return fd;
        r = exchange_on(fd, cfg->socket_path, request, len, reply, replymax,
                        deadline, level, app_fd, passed, slot < 0);
        socksify_ctlconn_give_back(fd, slot, r >= 0);
        if (r >= 0 || !reused || !socksify_ctlconn_retryable(r))
            break;
        LOG_DEBUG("the daemon closed control connection fd %d before reading the "
                  "request (%s); sending it on a new one", fd, socksify_strerror(-r));
    }
    if (r == -EPIPE || r == -ECONNRESET)   /* logged at debug level above */
        SOCKSIFY_LOG_AT(level, "no reply from the daemon at %s: %s", cfg->socket_path,
                        socksify_strerror(-r));
    return r;
}

int socksify_control_send_reply(const uint8_t *request, size_t len, uint8_t *reply, size_t replymax)
{
    return send_reply_fd(request, len, reply, replymax, -1, NULL);
}

int socksify_control_send(const uint8_t *request, size_t len, uint8_t reply[SOCKSIFY_REPLY_SIZE])
{
    int r = socksify_control_send_reply(request, len, reply, SOCKSIFY_REPLY_SIZE);

    return r < 0 ? r : 0;
}

int socksify_control_request(unsigned op, const struct socksify_connect_req *req,
                             uint8_t reply[SOCKSIFY_REPLY_SIZE])
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE];
    int r = socksify_wire_encode_request(op, req, request, sizeof request);

    if (r < 0) {
        LOG_WARN("cannot encode the request: %s", socksify_strerror(-r));
        return r;
    }
    return socksify_control_send(request, sizeof request, reply);
}

static int decode(const uint8_t reply[SOCKSIFY_REPLY_SIZE], struct socksify_reply *rep)
{
    int r;

    if ((r = socksify_wire_decode_reply(reply, SOCKSIFY_REPLY_SIZE, rep)) < 0) {
        LOG_WARN("malformed reply from the daemon: wrong magic, version or verdict "
                 "(starts %02x%02x%02x%02x %02x %02x)", reply[0], reply[1], reply[2],
                 reply[3], reply[SOCKSIFY_REP_OFF_VERSION], reply[SOCKSIFY_REP_OFF_VERDICT]);
        return r;
    }
    return 0;
}

int socksify_control_exchange(const struct socksify_connect_req *req,
                              struct socksify_reply *rep)
{
    uint8_t reply[SOCKSIFY_REPLY_SIZE];
    int r;

    if ((r = socksify_control_request(SOCKSIFY_OP_CONNECT, req, reply)) < 0)
        return r;
    return decode(reply, rep);
}

int socksify_control_handoff(const struct socksify_connect_req *req, int app_fd,
                             struct socksify_reply *rep, int *passed_fd)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE];
    int r;

    *passed_fd = -1;
    if ((r = socksify_wire_encode_request(SOCKSIFY_OP_HANDOFF, req, request,
                                          sizeof request)) < 0) {
        LOG_WARN("cannot encode the request: %s", socksify_strerror(-r));
        return r;
    }
    r = send_reply_fd(request, sizeof request, reply, sizeof reply, app_fd,
                      passed_fd);
    if (r >= 0)
        r = decode(reply, rep);
    if (r >= 0 && rep->verdict != SOCKSIFY_VERDICT_SWAP && *passed_fd >= 0) {
        LOG_WARN("the daemon passed a descriptor with verdict %u; closed", rep->verdict);
        SOCKSIFY_REAL_HOT(close)(*passed_fd);
        *passed_fd = -1;
    }
    if (r < 0 && *passed_fd >= 0) {
        SOCKSIFY_REAL_HOT(close)(*passed_fd);
        *passed_fd = -1;
    }
    return r < 0 ? r : 0;
}

int socksify_control_unwrap(const struct socksify_connect_req *req, int app_fd)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE];
    struct socksify_reply rep;
    int r;

    if ((r = socksify_wire_encode_request(SOCKSIFY_OP_UNWRAP, req, request,
                                          sizeof request)) < 0)
        return r;
    if ((r = send_reply_fd(request, sizeof request, reply, sizeof reply, app_fd, NULL)) < 0
        || (r = decode(reply, &rep)) < 0)
        return r;
    return rep.verdict == SOCKSIFY_VERDICT_READY ? 0 : -EPROTO;
}

int socksify_control_wrap(const struct socksify_connect_req *req, int app_fd,
                          uint8_t *reply, size_t replymax)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE];
    int r;

    if ((r = socksify_wire_encode_request(SOCKSIFY_OP_WRAP, req, request,
                                          sizeof request)) < 0) {
        LOG_WARN("cannot encode the request: %s", socksify_strerror(-r));
        return r;
    }
    return send_reply_fd(request, sizeof request, reply, replymax, app_fd, NULL);
}
