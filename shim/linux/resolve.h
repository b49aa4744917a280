/* RESOLVE and NAMEOF (docs/wire.md) for the name lookup hooks: may this name be looked
 * up here, or which stand-in address does it get? May this address be reverse-resolved
 * here, or what is it called? */
#ifndef SOCKSIFY_RESOLVE_H
#define SOCKSIFY_RESOLVE_H

#include <stddef.h>
#include <sys/socket.h>

#include "socksify_wire.h"

#define SOCKSIFY_NAME_REAL 0  /* call the real resolver function with the app's arguments */
#define SOCKSIFY_NAME_PEER 1  /* the daemon's stand-in address is in *peer */

/* Decide a lookup of name (not NULL) for family (SOCKSIFY_FAMILY_ANY, _INET or _INET6):
 * SOCKSIFY_NAME_REAL for a numeric address or localhost (without asking) and for a
 * DIRECT verdict; SOCKSIFY_NAME_PEER for a PEER one; -ENOENT when the name must not be
 * looked up (FAIL, or a name the wire cannot carry: empty, too long, not printable
 * ASCII); -EAGAIN when the daemon cannot be asked or answers something else (logged as
 * a warning). Never a local lookup the daemon did not allow. */
int socksify_resolve_name(const char *name, unsigned family, struct socksify_peer *peer);

/* As socksify_resolve_name(), but always asks the daemon, numeric names and localhost
 * included: for the res_* hooks, whose every call is a DNS query (no hosts file, no
 * numeric shortcut), so only the daemon's DIRECT lets the name out. */
int socksify_resolve_ask(const char *name, unsigned family, struct socksify_peer *peer);

/* Decide a reverse lookup of sa (getnameinfo, gethostbyaddr): SOCKSIFY_NAME_REAL (0)
 * without asking for an address that is not a complete AF_INET/AF_INET6 one or is
 * loopback (socksify_addr_is_loopback()), and for a DIRECT verdict; the name's length
 * (> 0) for a NAME reply, the name and a NUL written into name (namelen bytes, at
 * least SOCKSIFY_MAX_NAME + 1); -ENOENT when the address must not be reverse-resolved
 * here (FAIL); -EAGAIN when the daemon cannot be asked or answers something else
 * (logged as a warning). Never a local lookup the daemon did not allow. */
int socksify_resolve_addr(const struct sockaddr *sa, socklen_t salen, char *name,
                          size_t namelen);

#endif
