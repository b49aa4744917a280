/* The control connections a process keeps to the daemon between requests
 * (docs/wire.md, "One connection, many requests"): up to SOCKSIFY_CTLCONN_KEPT, each
 * used by one request at a time, so that two threads' requests never interleave on
 * one; close-on-exec, so an exec'd program does not inherit them; the process's own,
 * so a child (fork) opens its own rather than speak on its parent's. A request that
 * finds every kept connection in use (more threads asking at once, a signal handler's
 * connect() in the middle of a request) opens one of its own, closed after it: the
 * program holds at most that many descriptors more than without socksify, however
 * many threads it runs. */
#ifndef SOCKSIFY_CTLCONN_H
#define SOCKSIFY_CTLCONN_H

#include <stdint.h>

#define SOCKSIFY_CTLCONN_KEPT 4

/* A connection for one request: a free kept one if it is still good (ours, not
 * closed or replaced by the program, not closed by the daemon, nothing unread on it),
 * else a new one to the socket at socksify_config()->socket_path (directory and peer
 * checked, as for every connection), kept if a slot was free. *reused is 1 when the
 * connection carried an earlier request (a failure to deliver this one may then mean
 * that the daemon closed or restarted: see socksify_ctlconn_retryable()); *slot says
 * which kept one it is (-1: one of its own). Failures are logged at `level`. Returns
 * the descriptor or -errno. */
int socksify_ctlconn_take(int64_t deadline, int level, int *reused, int *slot);

/* The request on fd (from slot) is over: ok (the whole reply read) keeps a kept
 * connection for the next request; otherwise, or for one of its own, it is closed. */
void socksify_ctlconn_give_back(int fd, int slot, int ok);

/* May a request that failed with r on a reused connection be sent again, once, on a
 * new one? Only when the daemon cannot have acted on it: the send failed (EPIPE), or
 * the daemon closed the connection with the request unread (ECONNRESET). A connection
 * closed after the request was read (an EOF instead of the reply) is not retried. */
int socksify_ctlconn_retryable(int r);

#endif
