/* RESOLVE (docs/wire.md) for the name lookup hooks: may this name be looked up here, or
 * which stand-in address does it get? */
#ifndef SOCKSIFY_RESOLVE_H
#define SOCKSIFY_RESOLVE_H

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

#endif
