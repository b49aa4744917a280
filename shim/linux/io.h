/* Small I/O helpers with deadlines on the monotonic clock. They return -errno. */
#ifndef SOCKSIFY_IO_H
#define SOCKSIFY_IO_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t socksify_now_ms(void);

/* Wait until fd has one of events (POLLIN/POLLOUT) or the deadline passes: 0,
 * -ETIMEDOUT, or -errno. Retries EINTR. */
int socksify_wait_fd(int fd, short events, int64_t deadline_ms);

/* Send all of buf with MSG_NOSIGNAL, waiting for POLLOUT on EAGAIN: 0 or -errno. */
int socksify_send_all(int fd, const void *buf, size_t len, int64_t deadline_ms);

/* The pending error of a socket (SO_ERROR) as -errno, 0 if none. */
int socksify_socket_error(int fd);

#endif
