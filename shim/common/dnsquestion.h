/* A bounds-checked reader of the question of a DNS query message (RFC 1035 4.1), for
 * the res_send()/res_nsend() hooks: which name does this packet ask about? Pure: no
 * I/O, no libc resolver state. */
#ifndef SOCKSIFY_DNSQUESTION_H
#define SOCKSIFY_DNSQUESTION_H

#include <stddef.h>
#include <stdint.h>

/* The question name of the query msg (len bytes) as dotted text without the root's dot
 * ("" for the root itself), NUL-terminated in name (namelen bytes), and its type in
 * *qtype. Returns the text's length, or -EINVAL for a message this reader does not
 * take: shorter than a header, a response, an opcode other than QUERY, a question
 * count other than 1, a label that is a compression pointer or a reserved kind, a
 * label byte that is not printable ASCII or is a dot, a name or question running past
 * the end; -ENAMETOOLONG when the text does not fit in namelen bytes. */
int socksify_dns_question(const uint8_t *msg, size_t len, char *name, size_t namelen,
                          unsigned *qtype);

#endif
