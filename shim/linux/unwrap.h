/* Before a handed-off UDP socket closes (docs/wire.md, "Datagram handoff: WRAP",
 * UNWRAP): the daemon holds a copy of the socket while its association lives (so no
 * other user can bind the port); the close of the process's last copy tells it to end
 * the association. Nothing for any other descriptor: the callers check
 * socksify_carried_maybe() first (no system call). */
#ifndef SOCKSIFY_UNWRAP_H
#define SOCKSIFY_UNWRAP_H

/* fd is about to be closed (close(), or replaced by dup2()/dup3()): if it is a wrapped
 * socket this process asked WRAP for and no other descriptor in the carried table
 * holds the same socket, an UNWRAP with fd attached, its answer awaited (bounded, as
 * every control request), and fd's entry dropped. errno is kept. */
void socksify_unwrap_closing(int fd);

/* The same for every carried descriptor in [lo, hi] (close_range()). */
void socksify_unwrap_closing_range(unsigned lo, unsigned hi);

#endif
