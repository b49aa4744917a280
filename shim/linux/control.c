/* One request/reply exchange with the daemon over the control socket (docs/wire.md). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "init.h"
#include "io.h"
#include "log.h"

/* How long to wait between retries when the daemon's listen backlog is full. */
#define BACKLOG_RETRY_MS 10

int socksify_control_find_path(char *out, size_t outlen)
{
    const char *value;
    int n;

    if ((value = socksify_getenv("SOCKSIFY_SOCKET")) != NULL)
        n = snprintf(out, outlen, "%s", value);
    else if ((value = socksify_getenv("SOCKSIFY_RUNTIME_DIR")) != NULL)
        n = snprintf(out, outlen, "%s/control.sock", value);
    else if ((value = socksify_getenv("XDG_RUNTIME_DIR")) != NULL)
        n = snprintf(out, outlen, "%s/socksify/control.sock", value);
    else
        n = snprintf(out, outlen, "/tmp/socksify-%u/control.sock", (unsigned)getuid());
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The socket's directory must be a real directory owned by us: anyone else could
 * otherwise answer our requests. */
static int check_directory(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const char *slash = strrchr(path, '/');
    struct stat st;

    if (slash == NULL) {
        strcpy(dir, ".");
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    if (lstat(dir, &st) < 0) {
        int err = errno;
        LOG_WARN("cannot check the control socket's directory %s: %s", dir,
                 socksify_strerror(err));
        return -err;
    }
    if (!S_ISDIR(st.st_mode)) {
        LOG_WARN("the control socket's directory %s is not a directory (or is a symlink)",
                 dir);
        return -ENOTDIR;
    }
    if (st.st_uid != getuid()) {
        LOG_WARN("the control socket's directory %s is owned by uid %u, not %u; refusing",
                 dir, (unsigned)st.st_uid, (unsigned)getuid());
        return -EPERM;
    }
    return 0;
}

static int connect_control(socksify_connect_fn real_connect, int fd,
                           const struct sockaddr_un *sun, int64_t deadline)
{
    for (;;) {
        int r;

        if (real_connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EINPROGRESS) {
            r = socksify_wait_fd(fd, POLLOUT, deadline);
            return r < 0 ? r : socksify_socket_error(fd);
        }
        if (errno != EAGAIN)
            return -errno;
        /* The listen backlog is full: wait a little and try again. */
        if (socksify_now_ms() + BACKLOG_RETRY_MS >= deadline)
            return -ETIMEDOUT;
        poll(NULL, 0, BACKLOG_RETRY_MS);
    }
}

static int recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);

        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            LOG_WARN("the daemon closed the control connection after %zu of %zu reply bytes",
                     got, len);
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

static int exchange_on(socksify_connect_fn real_connect, int fd, const char *path,
                       const struct socksify_connect_req *req, struct socksify_reply *rep,
                       int64_t deadline)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    uint8_t request[SOCKSIFY_REQUEST_SIZE], reply[SOCKSIFY_REPLY_SIZE];
    int r;

    memcpy(sun.sun_path, path, strlen(path) + 1);  /* fits: checked by find_path */
    r = socksify_wire_encode_connect(req, request, sizeof request);
    if (r < 0) {
        LOG_WARN("cannot encode the request: %s", socksify_strerror(-r));
        return r;
    }
    if ((r = connect_control(real_connect, fd, &sun, deadline)) < 0) {
        LOG_WARN("cannot reach the socksify daemon at %s: %s", path, socksify_strerror(-r));
        return r;
    }
    if ((r = socksify_send_all(fd, request, sizeof request, deadline)) < 0) {
        LOG_WARN("cannot send the request to %s: %s", path, socksify_strerror(-r));
        return r;
    }
    if ((r = recv_all(fd, reply, sizeof reply, deadline)) < 0) {
        if (r != -EPROTO)
            LOG_WARN("no reply from the daemon at %s: %s", path, socksify_strerror(-r));
        return r;
    }
    if ((r = socksify_wire_decode_reply(reply, sizeof reply, rep)) < 0) {
        LOG_WARN("malformed reply from the daemon: wrong magic, version or verdict "
                 "(starts %02x%02x%02x%02x %02x %02x)", reply[0], reply[1], reply[2],
                 reply[3], reply[SOCKSIFY_REP_OFF_VERSION], reply[SOCKSIFY_REP_OFF_VERDICT]);
        return r;
    }
    return 0;
}

int socksify_control_exchange(socksify_connect_fn real_connect,
                              const struct socksify_connect_req *req,
                              struct socksify_reply *rep)
{
    const struct socksify_config *cfg = socksify_config();
    int64_t deadline = socksify_now_ms() + cfg->timeout_ms;
    int fd, r;

    if (cfg->socket_path_error < 0)
        return cfg->socket_path_error;
    if ((r = check_directory(cfg->socket_path)) < 0)
        return r;
    /* Our own fd, so it may be non-blocking; the app's fds are never touched. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        LOG_WARN("cannot create the control socket: %s", socksify_strerror(-r));
        return r;
    }
    r = exchange_on(real_connect, fd, cfg->socket_path, req, rep, deadline);
    close(fd);
    return r;
}
