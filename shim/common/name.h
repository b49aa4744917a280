/* Pure helpers on host names for the name lookup hooks. No I/O, no libc state. */
#ifndef SOCKSIFY_NAME_H
#define SOCKSIFY_NAME_H

/* 1 if a lookup of name never needs the daemon, else 0:
 *  - a numeric IPv4 address, in any form libc's resolver takes as one without a query
 *    (inet_pton's dotted quad, and inet_aton's "127.1", "0x7f000001", "2130706433");
 *  - a numeric IPv6 address, with or without a "%scope" suffix;
 *  - "localhost", in any case, with or without a trailing dot. A name under
 *    ".localhost" is not: RFC 6761 asks resolvers to keep it local, but glibc with
 *    "hosts: files dns" sends it to DNS unless the hosts file names it.
 * NULL is not a name: 0 (the hooks handle NULL before asking). */
int socksify_name_is_local(const char *name);

#endif
