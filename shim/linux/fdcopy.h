/* A descriptor copied (dup(), dup2(), dup3(), fcntl(F_DUPFD, F_DUPFD_CLOEXEC)): what
 * the shim keeps per descriptor -- the carried-socket table (carried.h) and the noted
 * peers (peers.h) -- follows the socket to its new number, so the copy sends and
 * receives carried datagrams and reports the peer the program asked for, as the
 * original does. */
#ifndef SOCKSIFY_FDCOPY_H
#define SOCKSIFY_FDCOPY_H

/* newfd (>= 0) was just made a copy of oldfd by libc: give newfd oldfd's entries, or
 * drop those newfd had (the socket dup2() closed). errno is left as it was; no system
 * call unless one of the two descriptors is in a table. */
void socksify_fd_copied(int oldfd, int newfd);

#endif
