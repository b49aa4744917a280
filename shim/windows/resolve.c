/* RESOLVE with the daemon (docs/wire.md): a name is looked up locally only if the
 * daemon says DIRECT; otherwise the program gets the daemon's stand-in address, which
 * the daemon maps back to the name when the program connects to it. */
#include <stdio.h>
#include <string.h>

#include "shim.h"

int socksify_resolve(const char *name, int af, struct socksify_peer *peer)
{
    uint8_t request[SOCKSIFY_REQUEST_SIZE + SOCKSIFY_MAX_NAME], reply[SOCKSIFY_REPLY_SIZE];
    struct socksify_reply rep;
    unsigned family = af == AF_INET ? SOCKSIFY_FAMILY_INET
                      : af == AF_INET6 ? SOCKSIFY_FAMILY_INET6 : SOCKSIFY_FAMILY_ANY;
    int n = socksify_wire_encode_resolve(name, family, socksify_cfg.session, request,
                                         sizeof request), r;

    if (n < 0) {
        LOG_WARN("lookup of a name the daemon cannot be asked about; refused");
        return -WSAHOST_NOT_FOUND;
    }
    r = socksify_control_send(request, (size_t)n, reply, sizeof reply);
    if (r < 0) {
        LOG_WARN("lookup of %s: no answer from the socksify daemon; failing it", name);
        return -WSATRY_AGAIN;  /* never a local query */
    }
    if (reply[SOCKSIFY_REP_OFF_VERDICT] == SOCKSIFY_VERDICT_PEER
        && socksify_wire_decode_peer(reply, sizeof reply, peer) == 0) {
        LOG_DEBUG("lookup of %s: stand-in address", name);
        return 0;
    }
    if (socksify_wire_decode_reply(reply, sizeof reply, &rep) != 0) {
        LOG_WARN("lookup of %s: malformed answer from the daemon; failing it", name);
        return -WSATRY_AGAIN;
    }
    if (rep.verdict == SOCKSIFY_VERDICT_DIRECT) {
        LOG_DEBUG("lookup of %s: DIRECT", name);
        return 1;
    }
    if (rep.verdict == SOCKSIFY_VERDICT_FAIL && rep.code == SOCKSIFY_CODE_TIMEDOUT) {
        LOG_INFO("lookup of %s: the daemon has no stand-in address free", name);
        return -WSATRY_AGAIN;
    }
    LOG_INFO("lookup of %s refused by the daemon", name);
    return -WSAHOST_NOT_FOUND;
}

void socksify_peer_text(const struct socksify_peer *peer, char *buf, size_t len)
{
    if (peer->family == SOCKSIFY_FAMILY_INET6)
        inet_ntop(AF_INET6, peer->addr, buf, len);
    else
        inet_ntop(AF_INET, peer->addr, buf, len);
}

int socksify_name_ascii(const wchar_t *name, char *out, size_t outlen)
{
    size_t i;

    for (i = 0; name[i] != L'\0'; i++) {
        if (i + 1 >= outlen || name[i] < 33 || name[i] > 126)
            return -1;
        out[i] = (char)name[i];
    }
    out[i] = '\0';
    return 0;
}
