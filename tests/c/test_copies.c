/* C tests of what the shim keeps per descriptor across copies of a descriptor
 * (shim/linux/fdcopy.c: the carried-socket table, carried.c, and the noted peers,
 * peers.c): socksify_fd_copied(), as the dup(), dup2(), dup3() and fcntl(F_DUPFD) hooks
 * call it after libc made the copy. Real sockets and real dup()s (this program is not
 * preloaded: libc's own calls), so the tables' inode checks are exercised as in a
 * program.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Ishim/common -Ishim/linux tests/c/test_copies.c \
 *      shim/linux/fdcopy.c shim/linux/carried.c shim/linux/peers.c
 *   ./a.out
 *
 * Every check below is one case (tests/unit/test_shim_c.py checks the passed count:
 * COPIES_CASES there). The last line is "N passed, M failed".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "carried.h"
#include "fdcopy.h"
#include "peers.h"
#include "vectors.h"

#define result_dup(ok, name) result(ok, "dup", name, NULL)

static int udp(void)
{
    return socket(AF_INET, SOCK_DGRAM, 0);
}

/* A CARRY answer with carrier ports p4/p6 and a token whose grant part is t... */
static struct socksify_reply answer(uint16_t p4, uint16_t p6, uint8_t t)
{
    struct socksify_reply rep;

    memset(&rep, 0, sizeof rep);
    rep.relay_port4 = p4;
    rep.relay_port6 = p6;
    for (int i = 0; i < 16; i++)
        rep.token[i] = (uint8_t)(t + i);
    return rep;
}

/* 1 if fd's entry is there, with rep's token (and, with carrier, rep's carrier). */
static int has(int fd, const struct socksify_reply *rep, int carrier)
{
    struct socksify_carried e;

    return socksify_carried_maybe(fd) && socksify_carried_get(fd, &e) == 0
           && (!carrier || (e.port4 == rep->relay_port4 && e.port6 == rep->relay_port6))
           && socksify_carried_has_token(&e, rep->token + 8);
}

#define carried_as(fd, rep) has(fd, rep, 1)
#define token_of(fd, rep) has(fd, rep, 0)

static int gone(int fd)
{
    struct socksify_carried e;

    return socksify_carried_get(fd, &e) == -ENOENT && !socksify_carried_maybe(fd);
}

int main(void)
{
    struct socksify_reply one = answer(4001, 6001, 0x10), two = answer(4002, 6002, 0x40);
    struct socksify_connect_req req;
    struct sockaddr_in peer;
    struct socksify_carried e;
    int a = udp(), b, c, d, other = udp();

    if (a < 0 || other < 0) {
        perror("socket");
        return 2;
    }
    memset(&req, 0, sizeof req);
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons(7);
    peer.sin_addr.s_addr = htonl(0xc0000201);

    /* an unconnected carried socket: its copy has its carrier and tokens */
    socksify_carried_mark(a, &one);
    b = dup(a);
    socksify_fd_copied(a, b);
    result_dup(carried_as(b, &one), "copy-has-the-entry");
    result_dup(carried_as(a, &one), "original-kept");
    result_dup(socksify_carried_get(b, &e) == 0 && !e.connected, "copy-unconnected");

    /* a connected one: the copy has its destination too */
    socksify_carried_connect(a, (struct sockaddr *)&peer, sizeof peer, &req, &two);
    c = fcntl(a, F_DUPFD_CLOEXEC, 200);
    socksify_fd_copied(a, c);
    result_dup(socksify_carried_get(c, &e) == 0 && e.connected && e.peer_len == sizeof peer
           && memcmp(&e.peer, &peer, sizeof peer) == 0, "copy-connected-to-the-peer");
    result_dup(token_of(c, &one) && carried_as(c, &two), "copy-has-both-tokens");

    /* dup2() of another socket onto a carried descriptor: the old entry is dropped */
    dup2(other, b);
    socksify_fd_copied(other, b);
    result_dup(gone(b), "target-dropped");
    result_dup(carried_as(a, &two), "original-kept-after-target-dropped");

    /* dup2() of a carried socket onto a descriptor carried for another socket: the
     * copy takes the source's entry */
    d = udp();
    socksify_carried_mark(d, &two);
    dup2(a, d);
    socksify_fd_copied(a, d);
    result_dup(socksify_carried_get(d, &e) == 0 && e.connected && token_of(d, &one),
           "target-takes-the-source");

    /* a copy of a descriptor that is not carried is not */
    b = dup(other);
    socksify_fd_copied(other, b);
    result_dup(gone(b), "plain-copy-plain");

    /* a stale entry (the descriptor closed and reused for a pipe) is not copied */
    {
        int p[2], copy;

        close(c);
        if (pipe(p) < 0)
            return 2;
        dup2(p[0], c);  /* c is a pipe now: its old entry is stale */
        copy = dup(c);
        socksify_fd_copied(c, copy);
        result_dup(gone(copy), "stale-not-copied");
        result_dup(gone(c), "stale-cleared");
    }

    /* the same descriptor, or none: nothing changes */
    socksify_fd_copied(a, a);
    result_dup(carried_as(a, &two), "self-unchanged");
    socksify_fd_copied(a, -1);
    result_dup(carried_as(a, &two), "negative-ignored");

    /* the noted peer (what getpeername() reports) follows the copy, and is dropped by a
     * dup2() over it */
    {
        struct sockaddr_in got;
        socklen_t len = sizeof got;
        int q = udp(), copy;

        socksify_peer_note(q, (struct sockaddr *)&peer, sizeof peer);
        copy = dup(q);
        socksify_fd_copied(q, copy);
        result(socksify_peer_lookup(copy, (struct sockaddr *)&got, &len) == 0
               && len == sizeof peer && memcmp(&got, &peer, sizeof peer) == 0,
               "peer", "copy-has-the-peer", NULL);
        len = sizeof got;
        dup2(other, copy);
        socksify_fd_copied(other, copy);
        result(socksify_peer_lookup(copy, (struct sockaddr *)&got, &len) == -ENOENT,
               "peer", "target-dropped", NULL);
        len = sizeof got;
        result(socksify_peer_lookup(q, (struct sockaddr *)&got, &len) == 0,
               "peer", "original-kept", NULL);
        copy = dup(other);
        socksify_fd_copied(other, copy);
        len = sizeof got;
        result(socksify_peer_lookup(copy, (struct sockaddr *)&got, &len) == -ENOENT,
               "peer", "plain-copy-plain", NULL);
    }

    /* copies share one kernel peer: when one of them is connected elsewhere (or
     * connected again), every copy's entry follows, so no copy sends an envelope to a
     * peer that is not the carrier */
    {
        int copy = dup(a);

        socksify_fd_copied(a, copy);
        socksify_carried_disconnect(a);
        result_dup(socksify_carried_get(copy, &e) == 0 && !e.connected,
                   "copy-disconnected-with-the-original");
        result_dup(socksify_carried_get(d, &e) == 0 && !e.connected,
                   "every-copy-disconnected");
        socksify_carried_connect(copy, (struct sockaddr *)&peer, sizeof peer, &req, &one);
        result_dup(socksify_carried_get(a, &e) == 0 && e.connected
                   && memcmp(&e.peer, &peer, sizeof peer) == 0,
                   "original-connected-with-the-copy");
        socksify_carried_disconnect(other);  /* not carried: nothing else changes */
        result_dup(socksify_carried_get(a, &e) == 0 && e.connected, "others-untouched");
    }

    /* UNWRAP's questions (unwrap.h): the other open copies of a socket, the carried
     * descriptors in a range, an entry dropped */
    {
        int x = udp(), y, z[2], n;

        socksify_carried_mark(x, &one);
        result_dup(socksify_carried_copies(x) == 0, "no-other-copy");
        y = dup(x);
        socksify_fd_copied(x, y);
        result_dup(socksify_carried_copies(x) == 1 && socksify_carried_copies(y) == 1,
                   "one-other-copy");
        n = socksify_carried_in_range((unsigned)x, (unsigned)y, z, 2);
        result_dup(n == 2 && z[0] + z[1] == x + y, "both-in-range");
        socksify_carried_forget(y);
        close(y);
        result_dup(gone(y) && socksify_carried_copies(x) == 0, "forgotten-copy");
        close(x);
    }

    return vector_done();
}
