/* Moving a wrapped datagram's payload into place (docs/wire.md, "Datagram handoff").
 *
 * A receive on a wrapped socket reads into [scratch, the program's buffers] with one
 * recvmsg(): the scratch is as long as the longest reply prefix of the socket's grants.
 * When the matched prefix is shorter, the payload starts inside the scratch: its first
 * scratch_len - prefix bytes are there, the rest in the program's buffers, which are
 * shifted forward to make room. Pure: no system calls. */
#ifndef SOCKSIFY_WRAPSHIFT_H
#define SOCKSIFY_WRAPSHIFT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* received: the bytes recvmsg() put in [scratch, iov] (its return value without
 * MSG_TRUNC: at most scratch_len + the buffers' room); prefix <= min(received,
 * scratch_len), the matched prefix. Moves the payload to the start of iov and returns
 * how many of its bytes are there now: min(room, received - prefix).
 * Bytes shifted past the end of the buffers are lost, as the kernel loses the end of a
 * datagram longer than the buffers (the caller reports MSG_TRUNC from the lengths). */
size_t socksify_wrap_unshift(const struct iovec *iov, size_t iovcnt, const uint8_t *scratch,
                             size_t scratch_len, size_t prefix, size_t received);

#endif
