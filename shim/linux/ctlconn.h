/* The control connection a thread keeps to the daemon between requests (docs/wire.md,
 * "One connection, many requests"): one per thread, so that two threads' requests never
 * interleave on one connection; close-on-exec, so an exec'd program does not inherit
 * it; the process's own, so a child (fork) opens its own rather than speak on its
 * parent's; closed when the thread exits. */
#ifndef SOCKSIFY_CTLCONN_H
#define SOCKSIFY_CTLCONN_H

#include <stdint.h>

/* A connection for one request: this thread's kept one if it is still good (ours, not
 * closed or replaced by the program, not closed by the daemon, nothing unread on it),
 * else a new one to the socket at socksify_config()->socket_path (directory and peer
 * checked, as for every connection) which the thread keeps. A request made while the
 * thread's connection is in use (a signal handler's connect() in the middle of one)
 * gets a connection of its own, closed after it. *reused is 1 when the connection
 * carried an earlier request (so a failure to deliver this one may mean that the daemon
 * closed or restarted: see socksify_ctlconn_retryable()). Failures are logged at
 * `level`. Returns the descriptor or -errno. */
int socksify_ctlconn_take(int64_t deadline, int level, int *reused);

/* The request on fd is over: ok (the whole reply read) keeps a thread's connection for
 * the next; otherwise, or for a one-request connection, it is closed. */
void socksify_ctlconn_give_back(int fd, int ok);

/* May a request that failed with r on a reused connection be sent again, once, on a
 * new one? Only when the daemon cannot have acted on it: the send failed (EPIPE), or
 * the daemon closed the connection with the request unread (ECONNRESET). A connection
 * closed after the request was read (an EOF instead of the reply) is not retried. */
int socksify_ctlconn_retryable(int r);

#endif
