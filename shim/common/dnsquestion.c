/* The question of a DNS query message (see dnsquestion.h). */
#include <errno.h>

#include "dnsquestion.h"

#define HEADER_SIZE 12

int socksify_dns_question(const uint8_t *msg, size_t len, char *name, size_t namelen,
                          unsigned *qtype)
{
    size_t i = HEADER_SIZE, out = 0;

    if (msg == NULL || name == NULL || namelen == 0 || len < HEADER_SIZE)
        return -EINVAL;
    if ((msg[2] & 0x80) || (msg[2] & 0x78) != 0)
        return -EINVAL;  /* a response, or not a standard QUERY */
    if (msg[4] != 0 || msg[5] != 1)
        return -EINVAL;  /* QDCOUNT must be 1 */
    for (;;) {
        unsigned n;

        if (i >= len)
            return -EINVAL;
        n = msg[i++];
        if (n == 0)
            break;
        if (n & 0xc0)
            return -EINVAL;  /* a pointer (0xc0) or a reserved label kind */
        if (n > len - i)
            return -EINVAL;
        if (out != 0) {
            if (out + 1 >= namelen)
                return -ENAMETOOLONG;
            name[out++] = '.';
        }
        for (unsigned k = 0; k < n; k++, i++) {
            if (msg[i] <= 0x20 || msg[i] >= 0x7f || msg[i] == '.')
                return -EINVAL;  /* the text would not say the same name */
            if (out + 1 >= namelen)
                return -ENAMETOOLONG;
            name[out++] = (char)msg[i];
        }
    }
    if (len - i < 4)
        return -EINVAL;  /* QTYPE and QCLASS */
    name[out] = '\0';
    if (qtype != NULL)
        *qtype = (unsigned)msg[i] << 8 | msg[i + 1];
    return (int)out;
}
