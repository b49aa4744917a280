/* Carried sockets (docs/wire.md, "Carried datagrams"): the UDP sockets this process sent
 * a datagram from through the daemon's carrier, so that their receive calls strip the
 * envelope, and those connect()ed to a carried destination, so that their sends without
 * an address get one; and handed-off ones ("Datagram handoff: WRAP"), with their WRAP
 * grants, whose sends go to hop 1's relay with a prefix and whose receives strip one. A small table keyed by descriptor and checked against the
 * socket's inode (as peers.h), so a descriptor closed and reused for another socket or
 * file is never taken for the one marked. Slots have try-locks: a busy slot is a miss,
 * never a wait (fork-safe). */
#ifndef SOCKSIFY_CARRIED_H
#define SOCKSIFY_CARRIED_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "socksify_wire.h"

#define SOCKSIFY_CARRIED_TOKENS 8  /* the last tokens used on a socket */
#define SOCKSIFY_CARRIED_WRAPS  4  /* the last WRAP grants of a socket, and refusals */
#define SOCKSIFY_CARRIED_SLOTS  1024  /* entries in the table */

/* A WRAP answer (docs/wire.md, "Datagram handoff: WRAP") for one destination. */
struct socksify_wrapgrant {
    struct socksify_connect_req req;  /* the destination, as asked about */
    struct socksify_wrap w;
};

struct socksify_carried {
    uint16_t port4, port6;                 /* the carrier */
    uint8_t tokens[SOCKSIFY_CARRIED_TOKENS][SOCKSIFY_CARRY_TOKEN_SIZE];
    unsigned ntokens;                      /* total ever noted (ring index) */
    int connected;                         /* connect()ed to a carried destination: */
    struct socksify_connect_req peer_req;  /*   that destination, as asked about */
    struct socksify_reply peer_rep;        /*   its CARRY answer */
    struct sockaddr_storage peer;          /*   as the program gave it */
    socklen_t peer_len;
    /* datagram handoff: the socket's grants (a ring), the destinations it asked WRAP
     * about and got another answer for (asked once per socket), and, with connected
     * 2, the grant of the peer it is connected to (through hop 1's relay) */
    struct socksify_wrapgrant wraps[SOCKSIFY_CARRIED_WRAPS];
    unsigned nwraps;
    struct socksify_connect_req nowrap[SOCKSIFY_CARRIED_WRAPS];
    unsigned nnowrap;
    struct socksify_wrapgrant peer_wrap;
    pid_t wrap_pid;                        /* the process that got the last WRAP grant */
};

/* 1 if fd may be a carried socket (no system call: the hot path of read()/write() on
 * every descriptor), else 0. A 1 is confirmed by socksify_carried_get(). */
int socksify_carried_maybe(int fd);

/* Copy fd's entry into *out if fd is still the socket marked: 0, or -ENOENT (a stale
 * entry, whose descriptor is now another file, is cleared). */
int socksify_carried_get(int fd, struct socksify_carried *out);

/* fd sent a datagram under rep (a CARRY answer): note the carrier and the token. */
void socksify_carried_mark(int fd, const struct socksify_reply *rep);

/* fd was connect()ed to a carried destination (peer, as given; req and rep: its
 * question and CARRY answer); it is marked too. */
void socksify_carried_connect(int fd, const struct sockaddr *peer, socklen_t len,
                              const struct socksify_connect_req *req,
                              const struct socksify_reply *rep);

/* fd is connected elsewhere, or dissolved its association: no carried peer any more
 * (its tokens stay, for replies still on their way). */
void socksify_carried_disconnect(int fd);

/* fd got a WRAP answer w for req: keep it (the carrier's ports and the token noted as
 * for CARRY, so an ERROR envelope is recognised). */
void socksify_carried_wrap(int fd, const struct socksify_connect_req *req,
                           const struct socksify_wrap *w);

/* fd asked WRAP about req and got another answer: not asked again on this socket. */
void socksify_carried_nowrap(int fd, const struct socksify_connect_req *req);

/* fd was connect()ed to a wrapped destination (through hop 1's relay): peer as given;
 * connected is 2 and peer_wrap the grant. */
void socksify_carried_connect_wrap(int fd, const struct sockaddr *peer, socklen_t len,
                                   const struct socksify_wrapgrant *g);

/* e's grant for req, or NULL. */
const struct socksify_wrapgrant *socksify_carried_find_wrap(const struct socksify_carried *e,
                                                            const struct socksify_connect_req *req);

/* 1 if fd asked WRAP about req and was answered otherwise. */
int socksify_carried_refused_wrap(const struct socksify_carried *e,
                                  const struct socksify_connect_req *req);

/* newfd was made a copy of oldfd (dup(), dup2(), dup3(), fcntl(F_DUPFD...)): if oldfd
 * is a carried socket, newfd is one too, with the same entry; otherwise an entry
 * newfd had (the socket dup2() closed) is dropped. */
void socksify_carried_dup(int oldfd, int newfd);

/* How many other descriptors in the table hold fd's socket (still open). */
int socksify_carried_copies(int fd);

/* fd's entry is dropped (it is being closed). */
void socksify_carried_forget(int fd);

/* The carried descriptors in [lo, hi] into out (at most max): how many. */
int socksify_carried_in_range(unsigned lo, unsigned hi, int *out, int max);

/* 1 if token is one of e's. */
int socksify_carried_has_token(const struct socksify_carried *e, const uint8_t *token);

#endif
