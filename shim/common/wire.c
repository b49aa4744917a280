/* Encode and decode the control wire format (docs/wire.md). Pure: no I/O, no libc state. */
#include <errno.h>
#include <string.h>

#include "socksify_wire.h"

SOCKSIFY_EXPORT unsigned socksify_wire_version(void)
{
    return SOCKSIFY_WIRE_VERSION;
}

SOCKSIFY_EXPORT unsigned socksify_shim_abi_version(void)
{
    return SOCKSIFY_SHIM_ABI_VERSION;
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* The bytes of a wire family's address, or 0 for an unknown family. */
static size_t family_addr_len(uint8_t family)
{
    if (family == SOCKSIFY_FAMILY_INET)
        return 4;
    if (family == SOCKSIFY_FAMILY_INET6)
        return 16;
    return 0;
}

/* A host name byte on the wire: printable ASCII without space. */
static int name_byte_ok(unsigned char c)
{
    return c >= 33 && c <= 126;
}

SOCKSIFY_EXPORT int socksify_wire_encode_request(unsigned op,
                                                 const struct socksify_connect_req *req,
                                                 uint8_t *out, size_t outlen)
{
    size_t addr_len;

    if (req == NULL || out == NULL || outlen < SOCKSIFY_REQUEST_SIZE)
        return -EINVAL;
    if (op != SOCKSIFY_OP_CONNECT && op != SOCKSIFY_OP_PEERNAME && op != SOCKSIFY_OP_NAMEOF
        && op != SOCKSIFY_OP_HANDOFF && op != SOCKSIFY_OP_WRAP && op != SOCKSIFY_OP_UNWRAP)
        return -EINVAL;
    if ((op == SOCKSIFY_OP_WRAP || op == SOCKSIFY_OP_UNWRAP)
        && req->socktype != SOCKSIFY_SOCKTYPE_DGRAM)
        return -EINVAL;
    if ((addr_len = family_addr_len(req->family)) == 0)
        return -EINVAL;
    if (req->socktype != SOCKSIFY_SOCKTYPE_STREAM && req->socktype != SOCKSIFY_SOCKTYPE_DGRAM)
        return -EINVAL;

    memset(out, 0, SOCKSIFY_REQUEST_SIZE);  /* reserved bytes and the v4 tail are zero */
    memcpy(out, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE);
    out[SOCKSIFY_REQ_OFF_VERSION] = SOCKSIFY_WIRE_VERSION;
    out[SOCKSIFY_REQ_OFF_OP] = (uint8_t)op;
    out[SOCKSIFY_REQ_OFF_FAMILY] = req->family;
    out[SOCKSIFY_REQ_OFF_SOCKTYPE] = req->socktype;
    put_be16(out + SOCKSIFY_REQ_OFF_PORT, req->port);
    put_be16(out + SOCKSIFY_REQ_OFF_BODY_LEN, 0);
    memcpy(out + SOCKSIFY_REQ_OFF_ADDR, req->addr, addr_len);
    memcpy(out + SOCKSIFY_REQ_OFF_SESSION, req->session, SOCKSIFY_SESSION_SIZE);
    return SOCKSIFY_REQUEST_SIZE;
}

SOCKSIFY_EXPORT int socksify_wire_encode_connect(const struct socksify_connect_req *req,
                                                 uint8_t *out, size_t outlen)
{
    return socksify_wire_encode_request(SOCKSIFY_OP_CONNECT, req, out, outlen);
}

SOCKSIFY_EXPORT int socksify_wire_encode_resolve(const char *name, unsigned family,
                                                 const uint8_t session[8],
                                                 uint8_t *out, size_t outlen)
{
    size_t len = 0;

    if (name == NULL || session == NULL || out == NULL)
        return -EINVAL;
    if (family != SOCKSIFY_FAMILY_ANY && family != SOCKSIFY_FAMILY_INET
        && family != SOCKSIFY_FAMILY_INET6)
        return -EINVAL;
    /* Printable ASCII without space, and at most SOCKSIFY_MAX_NAME bytes (the loop stops
     * at the first byte past that limit, so an overlong name is never read in full). */
    for (; len <= SOCKSIFY_MAX_NAME && name[len] != '\0'; len++)
        if (!name_byte_ok((unsigned char)name[len]))
            return -EINVAL;
    if (len == 0 || len > SOCKSIFY_MAX_NAME || outlen < SOCKSIFY_REQUEST_SIZE + len)
        return -EINVAL;

    memset(out, 0, SOCKSIFY_REQUEST_SIZE);
    memcpy(out, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE);
    out[SOCKSIFY_REQ_OFF_VERSION] = SOCKSIFY_WIRE_VERSION;
    out[SOCKSIFY_REQ_OFF_OP] = SOCKSIFY_OP_RESOLVE;
    out[SOCKSIFY_REQ_OFF_FAMILY] = (uint8_t)family;
    out[SOCKSIFY_REQ_OFF_SOCKTYPE] = SOCKSIFY_SOCKTYPE_STREAM;
    put_be16(out + SOCKSIFY_REQ_OFF_BODY_LEN, (uint16_t)len);
    memcpy(out + SOCKSIFY_REQ_OFF_SESSION, session, SOCKSIFY_SESSION_SIZE);
    memcpy(out + SOCKSIFY_REQUEST_SIZE, name, len);
    return (int)(SOCKSIFY_REQUEST_SIZE + len);
}

/* Length, magic and version: what every reply must get right. */
static int check_reply_head(const uint8_t *in, size_t len)
{
    if (in == NULL || len != SOCKSIFY_REPLY_SIZE)
        return -EPROTO;
    if (memcmp(in, SOCKSIFY_MAGIC, SOCKSIFY_MAGIC_SIZE) != 0
        || in[SOCKSIFY_REP_OFF_VERSION] != SOCKSIFY_WIRE_VERSION)
        return -EPROTO;
    return 0;
}

SOCKSIFY_EXPORT int socksify_wire_decode_reply(const uint8_t *in, size_t len,
                                               struct socksify_reply *out)
{
    uint8_t verdict;

    if (out == NULL || check_reply_head(in, len) < 0)
        return -EPROTO;
    verdict = in[SOCKSIFY_REP_OFF_VERDICT];
    if (verdict != SOCKSIFY_VERDICT_RELAY && verdict != SOCKSIFY_VERDICT_DIRECT
        && verdict != SOCKSIFY_VERDICT_FAIL && verdict != SOCKSIFY_VERDICT_READY
        && verdict != SOCKSIFY_VERDICT_SWAP && verdict != SOCKSIFY_VERDICT_CARRY)
        return -EPROTO;

    out->verdict = verdict;
    out->code = in[SOCKSIFY_REP_OFF_CODE];
    out->flags = in[SOCKSIFY_REP_OFF_FLAGS];
    out->relay_port4 = get_be16(in + SOCKSIFY_REP_OFF_PORT4);
    out->relay_port6 = get_be16(in + SOCKSIFY_REP_OFF_PORT6);
    memcpy(out->token, in + SOCKSIFY_REP_OFF_TOKEN, SOCKSIFY_TOKEN_SIZE);
    return 0;
}

SOCKSIFY_EXPORT int socksify_wire_decode_peer(const uint8_t *in, size_t len,
                                              struct socksify_peer *out)
{
    uint8_t family;
    size_t addr_len;

    if (out == NULL || check_reply_head(in, len) < 0
        || in[SOCKSIFY_REP_OFF_VERDICT] != SOCKSIFY_VERDICT_PEER)
        return -EPROTO;
    family = in[SOCKSIFY_PEER_OFF_FAMILY];
    if ((addr_len = family_addr_len(family)) == 0)
        return -EPROTO;

    memset(out, 0, sizeof *out);  /* the v4 tail of addr is zero */
    out->family = family;
    out->port = get_be16(in + SOCKSIFY_PEER_OFF_PORT);
    memcpy(out->addr, in + SOCKSIFY_PEER_OFF_ADDR, addr_len);
    return 0;
}

SOCKSIFY_EXPORT int socksify_wire_decode_name(const uint8_t *in, size_t len, char *out,
                                              size_t outlen)
{
    size_t body_len;

    if (in == NULL || len < SOCKSIFY_REPLY_SIZE
        || check_reply_head(in, SOCKSIFY_REPLY_SIZE) < 0
        || in[SOCKSIFY_REP_OFF_VERDICT] != SOCKSIFY_VERDICT_NAME)
        return -EPROTO;
    body_len = get_be16(in + SOCKSIFY_NAME_OFF_BODY_LEN);
    if (body_len == 0 || body_len > SOCKSIFY_MAX_NAME || len != SOCKSIFY_REPLY_SIZE + body_len)
        return -EPROTO;
    for (size_t i = 0; i < body_len; i++)
        if (!name_byte_ok(in[SOCKSIFY_REPLY_SIZE + i]))
            return -EPROTO;
    if (out == NULL)
        return -EINVAL;
    if (outlen < body_len + 1)
        return -ERANGE;
    memcpy(out, in + SOCKSIFY_REPLY_SIZE, body_len);
    out[body_len] = '\0';
    return (int)body_len;
}

SOCKSIFY_EXPORT int socksify_wire_encode_dgram(const struct socksify_dgram *d, uint8_t *out,
                                               size_t outlen)
{
    size_t addr_len;

    if (d == NULL || out == NULL || outlen < SOCKSIFY_DGRAM_SIZE)
        return -EINVAL;
    if (d->kind != SOCKSIFY_DGRAM_KIND_DATA && d->kind != SOCKSIFY_DGRAM_KIND_ERROR)
        return -EINVAL;
    if ((addr_len = family_addr_len(d->family)) == 0)
        return -EINVAL;
    memset(out, 0, SOCKSIFY_DGRAM_SIZE);  /* reserved bytes and the v4 tail are zero */
    memcpy(out, SOCKSIFY_DGRAM_MAGIC, SOCKSIFY_MAGIC_SIZE);
    out[SOCKSIFY_DGRAM_OFF_VERSION] = SOCKSIFY_WIRE_VERSION;
    out[SOCKSIFY_DGRAM_OFF_KIND] = d->kind;
    out[SOCKSIFY_DGRAM_OFF_FAMILY] = d->family;
    out[SOCKSIFY_DGRAM_OFF_CODE] = d->kind == SOCKSIFY_DGRAM_KIND_ERROR ? d->code : 0;
    put_be16(out + SOCKSIFY_DGRAM_OFF_PORT, d->port);
    memcpy(out + SOCKSIFY_DGRAM_OFF_ADDR, d->addr, addr_len);
    memcpy(out + SOCKSIFY_DGRAM_OFF_TOKEN, d->token, SOCKSIFY_CARRY_TOKEN_SIZE);
    return SOCKSIFY_DGRAM_SIZE;
}

SOCKSIFY_EXPORT int socksify_wire_decode_dgram(const uint8_t *in, size_t len,
                                               struct socksify_dgram *out)
{
    uint8_t kind, family;
    size_t addr_len;

    if (in == NULL || out == NULL || len < SOCKSIFY_DGRAM_SIZE)
        return -EPROTO;
    if (memcmp(in, SOCKSIFY_DGRAM_MAGIC, SOCKSIFY_MAGIC_SIZE) != 0
        || in[SOCKSIFY_DGRAM_OFF_VERSION] != SOCKSIFY_WIRE_VERSION)
        return -EPROTO;
    kind = in[SOCKSIFY_DGRAM_OFF_KIND];
    family = in[SOCKSIFY_DGRAM_OFF_FAMILY];
    if (kind != SOCKSIFY_DGRAM_KIND_DATA && kind != SOCKSIFY_DGRAM_KIND_ERROR)
        return -EPROTO;
    if ((addr_len = family_addr_len(family)) == 0)
        return -EPROTO;
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->family = family;
    out->code = kind == SOCKSIFY_DGRAM_KIND_ERROR ? in[SOCKSIFY_DGRAM_OFF_CODE] : 0;
    out->port = get_be16(in + SOCKSIFY_DGRAM_OFF_PORT);
    memcpy(out->addr, in + SOCKSIFY_DGRAM_OFF_ADDR, addr_len);
    memcpy(out->token, in + SOCKSIFY_DGRAM_OFF_TOKEN, SOCKSIFY_CARRY_TOKEN_SIZE);
    return 0;
}

int socksify_wire_wrap_body_len(const uint8_t *head, size_t len)
{
    size_t body_len;

    if (check_reply_head(head, len) < 0 || head[SOCKSIFY_REP_OFF_VERDICT] != SOCKSIFY_VERDICT_WRAP
        || family_addr_len(head[SOCKSIFY_WRAP_OFF_FAMILY]) == 0)
        return -EPROTO;
    body_len = get_be16(head + SOCKSIFY_WRAP_OFF_BODY_LEN);
    if (body_len < SOCKSIFY_WRAP_FIXED_BODY + 2 || body_len > SOCKSIFY_WRAP_MAX_BODY)
        return -EPROTO;
    return (int)body_len;
}

int socksify_wire_decode_wrap(const uint8_t *in, size_t len, struct socksify_wrap *out)
{
    const uint8_t *body;
    size_t send_len, reply_len;
    int body_len;

    if (in == NULL || out == NULL || len < SOCKSIFY_REPLY_SIZE)
        return -EPROTO;
    if ((body_len = socksify_wire_wrap_body_len(in, SOCKSIFY_REPLY_SIZE)) < 0
        || len != SOCKSIFY_REPLY_SIZE + (size_t)body_len)
        return -EPROTO;
    body = in + SOCKSIFY_REPLY_SIZE;
    send_len = body[16];
    reply_len = body[17];
    if (send_len == 0 || reply_len == 0
        || (size_t)body_len != SOCKSIFY_WRAP_FIXED_BODY + send_len + 2 * reply_len)
        return -EPROTO;
    body += SOCKSIFY_WRAP_FIXED_BODY;
    for (size_t i = 0; i < reply_len; i++)
        if (body[send_len + i] & (uint8_t)~body[send_len + reply_len + i])
            return -EPROTO;

    memset(out, 0, sizeof *out);
    out->family = in[SOCKSIFY_WRAP_OFF_FAMILY];
    out->port = get_be16(in + SOCKSIFY_WRAP_OFF_PORT);
    memcpy(out->addr, in + SOCKSIFY_WRAP_OFF_ADDR, family_addr_len(out->family));
    out->carrier_port4 = get_be16(in + SOCKSIFY_WRAP_OFF_CARRIER4);
    out->carrier_port6 = get_be16(in + SOCKSIFY_WRAP_OFF_CARRIER6);
    memcpy(out->generation, in + SOCKSIFY_REPLY_SIZE, 8);
    memcpy(out->token, in + SOCKSIFY_REPLY_SIZE + 8, 8);
    out->send_len = (uint8_t)send_len;
    out->reply_len = (uint8_t)reply_len;
    memcpy(out->send, body, send_len);
    memcpy(out->reply, body + send_len, reply_len);
    memcpy(out->mask, body + send_len + reply_len, reply_len);
    return 0;
}

int socksify_wire_wrap_match(const struct socksify_wrap *w, const uint8_t *in, size_t len)
{
    if (w == NULL || in == NULL || w->reply_len == 0 || len < w->reply_len)
        return 0;
    for (size_t i = 0; i < w->reply_len; i++)
        if ((in[i] & w->mask[i]) != w->reply[i])
            return 0;
    return 1;
}

SOCKSIFY_EXPORT int socksify_wire_errno(unsigned code)
{
    switch (code) {
    case SOCKSIFY_CODE_NONE:        return 0;
    case SOCKSIFY_CODE_CONNREFUSED: return ECONNREFUSED;
    case SOCKSIFY_CODE_TIMEDOUT:    return ETIMEDOUT;
    case SOCKSIFY_CODE_ACCES:       return EACCES;
    case SOCKSIFY_CODE_NETUNREACH:  return ENETUNREACH;
    case SOCKSIFY_CODE_HOSTUNREACH: return EHOSTUNREACH;
    case SOCKSIFY_CODE_CONNRESET:   return ECONNRESET;
    case SOCKSIFY_CODE_PROTO:       return EPROTO;
    case SOCKSIFY_CODE_AFNOSUPPORT: return EAFNOSUPPORT;
    default:                        return EPROTO;
    }
}
