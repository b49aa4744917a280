/* socksify_wrap_unshift(): see wrapshift.h. */
#include <string.h>

#include "wrapshift.h"

static size_t iov_room(const struct iovec *iov, size_t iovcnt)
{
    size_t room = 0;

    for (size_t i = 0; i < iovcnt; i++)
        room += iov[i].iov_len;
    return room;
}

/* The byte at offset `at` of the buffers (at < room). */
static uint8_t *iov_at(const struct iovec *iov, size_t at)
{
    while (at >= iov->iov_len) {
        at -= iov->iov_len;
        iov++;
    }
    return (uint8_t *)iov->iov_base + at;
}

size_t socksify_wrap_unshift(const struct iovec *iov, size_t iovcnt, const uint8_t *scratch,
                             size_t scratch_len, size_t prefix, size_t received)
{
    size_t room = iov_room(iov, iovcnt);
    size_t in_scratch = received < scratch_len ? received : scratch_len;
    size_t head = prefix < in_scratch ? in_scratch - prefix : 0;  /* payload in scratch */
    size_t got = received > scratch_len ? received - scratch_len : 0;
    size_t total, moved;

    if (got > room)
        got = room;
    total = got + head < room ? got + head : room;
    if (head == 0)
        return total;
    /* the buffers' bytes [0, total - head) move to [head, total): from the end, one
     * byte at a time across segments (short: at most a few hundred bytes per datagram
     * past the first segment's memmove) */
    moved = total > head ? total - head : 0;  /* buffers smaller than the scratch's share */
    if (moved == 0) {
        /* nothing of the buffers' bytes stays */
    } else if (total <= iov[0].iov_len) {
        memmove((uint8_t *)iov[0].iov_base + head, iov[0].iov_base, moved);
    } else {
        for (size_t i = moved; i-- > 0;)
            *iov_at(iov, i + head) = *iov_at(iov, i);
    }
    for (size_t i = 0; i < head && i < total; i++)
        *iov_at(iov, i) = scratch[prefix + i];
    return total;
}
