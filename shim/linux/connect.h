/* The connect() hook's logic, for the send hooks that connect first. */
#ifndef SOCKSIFY_CONNECT_H
#define SOCKSIFY_CONNECT_H

#include <sys/socket.h>

/* The connect() hook's logic (0 or -errno), for sendto()/sendmsg() with MSG_FASTOPEN on
 * a stream socket: the destination is judged as connect() would judge it. */
int socksify_connect_checked(int fd, const struct sockaddr *addr, socklen_t len);

#endif
