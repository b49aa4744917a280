/* What handed-off sockets connected to: a connection the daemon built on the
 * program's own socket (HANDOFF) has hop 1 as its kernel peer, but getpeername() must
 * report the destination the program asked for. A small table keyed by descriptor and
 * checked against the socket's inode, so a descriptor closed and reused is not
 * mistaken for the one noted. */
#ifndef SOCKSIFY_PEERS_H
#define SOCKSIFY_PEERS_H

#include <sys/socket.h>

/* Remember that fd (now connected through a chain) was connected to addr. */
void socksify_peer_note(int fd, const struct sockaddr *addr, socklen_t len);

/* The address noted for fd, if fd is still that socket: copies it (truncated to
 * *len, as the kernel does) and sets *len to its full size; 0, or -ENOENT. */
int socksify_peer_lookup(int fd, struct sockaddr *addr, socklen_t *len);

/* newfd was made a copy of oldfd (dup() and its kin): if oldfd has a note, newfd gets
 * it too; otherwise a note newfd had (the socket dup2() closed) is dropped. No system
 * call unless one of the two has a note (or its slot is shared). */
void socksify_peer_dup(int oldfd, int newfd);

#endif
