/* The control wire format (docs/wire.md), version 1: the single C definition.
 *
 * Everything here is pure: constants, the decoded structs and the encode/decode
 * functions of shim/common/wire.c. The structs use fixed-width fields only, so that
 * daemon/socksify/shimlib.py can give them to cffi verbatim. They are not the bytes on
 * the wire (those are big-endian and padded); the encode/decode functions convert.
 */
#ifndef SOCKSIFY_WIRE_H
#define SOCKSIFY_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* The few functions the library exports; everything else is -fvisibility=hidden (on
 * Windows: not exported from the DLL). */
#ifdef _WIN32
#define SOCKSIFY_EXPORT __declspec(dllexport)
#else
#define SOCKSIFY_EXPORT __attribute__((visibility("default")))
#endif

#define SOCKSIFY_WIRE_VERSION      1   /* docs/wire.md, "version" byte */
#define SOCKSIFY_SHIM_ABI_VERSION  6   /* the exported functions and structs below */

#define SOCKSIFY_MAGIC        "SKFY"
#define SOCKSIFY_MAGIC_SIZE   4
#define SOCKSIFY_REQUEST_SIZE 48
#define SOCKSIFY_REPLY_SIZE   32
#define SOCKSIFY_ADDR_SIZE    16
#define SOCKSIFY_SESSION_SIZE 8
#define SOCKSIFY_TOKEN_SIZE   16
#define SOCKSIFY_MAX_NAME     255  /* RESOLVE, NAME: the longest name (body_len) */

/* Request "op". */
#define SOCKSIFY_OP_CONNECT  1
#define SOCKSIFY_OP_PEERNAME 2
#define SOCKSIFY_OP_RESOLVE  3  /* a name follows the header: socksify_wire_encode_resolve() */
#define SOCKSIFY_OP_NAMEOF   4  /* what is addr called? socksify_wire_encode_request() */
#define SOCKSIFY_OP_HANDOFF  5  /* CONNECT, with the app's socket attached (SCM_RIGHTS) */
#define SOCKSIFY_OP_WRAP     6  /* datagram CONNECT, the app's UDP socket attached */
#define SOCKSIFY_OP_UNWRAP   7  /* the app closes its wrapped UDP socket, attached */

/* Request "family" (wire values, not AF_*). */
#define SOCKSIFY_FAMILY_ANY   0  /* RESOLVE only: either family */
#define SOCKSIFY_FAMILY_INET  4
#define SOCKSIFY_FAMILY_INET6 6

/* Request "socktype" (wire values, not SOCK_*). */
#define SOCKSIFY_SOCKTYPE_STREAM 1
#define SOCKSIFY_SOCKTYPE_DGRAM  2

/* Reply "verdict". */
#define SOCKSIFY_VERDICT_RELAY  0
#define SOCKSIFY_VERDICT_DIRECT 1
#define SOCKSIFY_VERDICT_FAIL   2
#define SOCKSIFY_VERDICT_PEER   3  /* answer to PEERNAME: socksify_wire_decode_peer() */
#define SOCKSIFY_VERDICT_NAME   4  /* answer to NAMEOF, a name follows: _decode_name() */
#define SOCKSIFY_VERDICT_READY  5  /* HANDOFF: the daemon connected your socket through the chain */
#define SOCKSIFY_VERDICT_SWAP   6  /* HANDOFF: put the attached, connected socket in place of yours */
#define SOCKSIFY_VERDICT_CARRY  7  /* datagrams: send them, enveloped, to the daemon's carrier */
#define SOCKSIFY_VERDICT_WRAP   8  /* WRAP: send them yourself to hop 1's relay, a body follows */

/* Reply flags (byte 7) */
#define SOCKSIFY_FLAG_CACHE 0x01  /* DIRECT: holds until the policy generation changes */

/* Reply "code": portable error numbers, see socksify_wire_errno(). */
#define SOCKSIFY_CODE_NONE         0
#define SOCKSIFY_CODE_CONNREFUSED  1
#define SOCKSIFY_CODE_TIMEDOUT     2
#define SOCKSIFY_CODE_ACCES        3
#define SOCKSIFY_CODE_NETUNREACH   4
#define SOCKSIFY_CODE_HOSTUNREACH  5
#define SOCKSIFY_CODE_CONNRESET    6
#define SOCKSIFY_CODE_PROTO        7
#define SOCKSIFY_CODE_AFNOSUPPORT  8

/* Offsets inside the request header. */
#define SOCKSIFY_REQ_OFF_VERSION  4
#define SOCKSIFY_REQ_OFF_OP       5
#define SOCKSIFY_REQ_OFF_FAMILY   6
#define SOCKSIFY_REQ_OFF_SOCKTYPE 7
#define SOCKSIFY_REQ_OFF_PORT     8
#define SOCKSIFY_REQ_OFF_BODY_LEN 10
#define SOCKSIFY_REQ_OFF_ADDR     12
#define SOCKSIFY_REQ_OFF_SESSION  28

/* Offsets inside the reply. */
#define SOCKSIFY_REP_OFF_VERSION  4
#define SOCKSIFY_REP_OFF_VERDICT  5
#define SOCKSIFY_REP_OFF_CODE     6
#define SOCKSIFY_REP_OFF_FLAGS    7
#define SOCKSIFY_REP_OFF_PORT4    8
#define SOCKSIFY_REP_OFF_PORT6    10
#define SOCKSIFY_REP_OFF_TOKEN    12

/* A CARRY reply keeps the reply head; its 16 "token" bytes (12-27) are the policy
 * generation (12-19) and the grant's token (20-27): socksify_reply.token[0..7] and
 * token[8..15]. port4/port6 (relay_port4/6) are the carrier's loopback ports. */
#define SOCKSIFY_CARRY_OFF_GENERATION 12
#define SOCKSIFY_CARRY_OFF_TOKEN      20
#define SOCKSIFY_CARRY_TOKEN_SIZE     8

/* The datagram envelope (docs/wire.md, "Carried datagrams"): 36 bytes before each
 * carried datagram's payload, both directions, on loopback UDP. */
#define SOCKSIFY_DGRAM_MAGIC     "SKDG"
#define SOCKSIFY_DGRAM_SIZE      36
#define SOCKSIFY_DGRAM_KIND_DATA  0
#define SOCKSIFY_DGRAM_KIND_ERROR 1
#define SOCKSIFY_DGRAM_OFF_VERSION 4
#define SOCKSIFY_DGRAM_OFF_KIND    5
#define SOCKSIFY_DGRAM_OFF_FAMILY  6
#define SOCKSIFY_DGRAM_OFF_CODE    7
#define SOCKSIFY_DGRAM_OFF_PORT    8
#define SOCKSIFY_DGRAM_OFF_ADDR    12
#define SOCKSIFY_DGRAM_OFF_TOKEN   28

/* The WRAP reply (docs/wire.md, "Datagram handoff: WRAP"): the 32-byte head (family,
 * port, body_len, the relay's address, the carrier's ports), then a body: generation (8), token (8),
 * send_len (1), reply_len (1), the send prefix, the reply prefix, the reply mask. */
#define SOCKSIFY_WRAP_OFF_FAMILY    6
#define SOCKSIFY_WRAP_OFF_PORT      8
#define SOCKSIFY_WRAP_OFF_BODY_LEN  10
#define SOCKSIFY_WRAP_OFF_ADDR      12
#define SOCKSIFY_WRAP_OFF_CARRIER4  28   /* the carrier's ports: an ERROR comes from there */
#define SOCKSIFY_WRAP_OFF_CARRIER6  30
#define SOCKSIFY_WRAP_FIXED_BODY    18   /* generation, token, send_len, reply_len */
#define SOCKSIFY_WRAP_MAX_PREFIX    255
#define SOCKSIFY_WRAP_MAX_BODY      (SOCKSIFY_WRAP_FIXED_BODY + 3 * SOCKSIFY_WRAP_MAX_PREFIX)

/* Offsets inside a PEER reply (same head as any reply). */
#define SOCKSIFY_PEER_OFF_FAMILY  6
#define SOCKSIFY_PEER_OFF_PORT    8
#define SOCKSIFY_PEER_OFF_ADDR    12

/* Offsets inside a NAME reply (same head as any reply; body_len bytes of name follow). */
#define SOCKSIFY_NAME_OFF_BODY_LEN 10

/* A CONNECT, PEERNAME or NAMEOF request before encoding (the op is given to the encoder).
 * For family 4 only addr[0..3] is used. */
struct socksify_connect_req {
    uint8_t family;    /* SOCKSIFY_FAMILY_* */
    uint8_t socktype;  /* SOCKSIFY_SOCKTYPE_* */
    uint16_t port;     /* host order */
    uint8_t addr[16];
    uint8_t session[8];
};

/* A decoded reply. code is the raw byte; map it with socksify_wire_errno(). */
struct socksify_reply {
    uint8_t verdict;   /* SOCKSIFY_VERDICT_* */
    uint8_t code;      /* SOCKSIFY_CODE_* (or an unknown value) */
    uint8_t flags;     /* SOCKSIFY_FLAG_* (unknown bits are ignored) */
    uint16_t relay_port4;
    uint16_t relay_port6;  /* host order */
    uint8_t token[16];
};

/* A decoded PEER reply: the destination the program asked for. For family 4 only
 * addr[0..3] is set; the rest is zero. */
struct socksify_peer {
    uint8_t family;    /* SOCKSIFY_FAMILY_* */
    uint16_t port;     /* host order */
    uint8_t addr[16];
};

/* A decoded datagram envelope. For family 4 only addr[0..3] is used (and set). */
struct socksify_dgram {
    uint8_t kind;      /* SOCKSIFY_DGRAM_KIND_* */
    uint8_t family;    /* SOCKSIFY_FAMILY_INET or _INET6 */
    uint8_t code;      /* ERROR: SOCKSIFY_CODE_*; DATA: 0 */
    uint16_t port;     /* host order: the destination (to the daemon) or source (from it) */
    uint8_t addr[16];
    uint8_t token[8];  /* the grant's token, from the CARRY reply */
};

/* A decoded WRAP reply: where hop 1's relay is, what goes before each datagram sent
 * there, and the masked prefix that marks a reply from the destination. */
struct socksify_wrap {
    uint8_t family;    /* the relay's: SOCKSIFY_FAMILY_INET or _INET6 */
    uint16_t port;     /* host order */
    uint8_t addr[16];  /* family 4: addr[0..3], the rest zero */
    uint16_t carrier_port4, carrier_port6;  /* host order; where an ERROR comes from */
    uint8_t generation[8];
    uint8_t token[8];  /* the grant's token: an ERROR envelope from the carrier names it */
    uint8_t send_len;  /* 1..255 */
    uint8_t reply_len; /* 1..255 */
    uint8_t send[SOCKSIFY_WRAP_MAX_PREFIX];
    uint8_t reply[SOCKSIFY_WRAP_MAX_PREFIX];
    uint8_t mask[SOCKSIFY_WRAP_MAX_PREFIX];
};

/* 1: the wire version this library speaks. */
SOCKSIFY_EXPORT unsigned socksify_wire_version(void);

/* 6: the version of the exported functions and structs. */
SOCKSIFY_EXPORT unsigned socksify_shim_abi_version(void);

/* Write the 48-byte request header with the given op (CONNECT, PEERNAME or NAMEOF) for
 * req into out (NAMEOF: the caller sets port 0 and socktype stream). Returns
 * SOCKSIFY_REQUEST_SIZE, or -EINVAL for a NULL pointer, outlen < 48, or an unknown op
 * (RESOLVE included: it has a body, see socksify_wire_encode_resolve()), family or
 * socktype. */
SOCKSIFY_EXPORT int socksify_wire_encode_request(unsigned op,
                                                 const struct socksify_connect_req *req,
                                                 uint8_t *out, size_t outlen);

/* socksify_wire_encode_request(SOCKSIFY_OP_CONNECT, req, out, outlen). */
SOCKSIFY_EXPORT int socksify_wire_encode_connect(const struct socksify_connect_req *req,
                                                 uint8_t *out, size_t outlen);

/* Write a RESOLVE request into out: the 48-byte header (family as given, socktype
 * stream, port 0, addr zero, body_len the name's length, session) and then the name,
 * without its NUL. name is what the program looks up: 1..SOCKSIFY_MAX_NAME bytes of
 * printable ASCII without space (33..126); family is SOCKSIFY_FAMILY_ANY, _INET or
 * _INET6. Returns SOCKSIFY_REQUEST_SIZE + strlen(name), or -EINVAL for a NULL pointer,
 * a name that breaks those rules, another family, or an outlen below the size. */
SOCKSIFY_EXPORT int socksify_wire_encode_resolve(const char *name, unsigned family,
                                                 const uint8_t session[8],
                                                 uint8_t *out, size_t outlen);

/* Parse one RELAY, DIRECT or FAIL reply (len must be exactly SOCKSIFY_REPLY_SIZE).
 * Returns 0, or -EPROTO for a wrong length, magic, version or verdict (out is then left
 * untouched). A PEER reply (verdict 3) is rejected here, as by the Python Reply.loads:
 * read it with socksify_wire_decode_peer(). */
SOCKSIFY_EXPORT int socksify_wire_decode_reply(const uint8_t *in, size_t len,
                                               struct socksify_reply *out);

/* Parse one PEER reply (len must be exactly SOCKSIFY_REPLY_SIZE). Returns 0, or -EPROTO
 * for a wrong length, magic or version, a verdict other than PEER, or an unknown family
 * (out is then left untouched). */
SOCKSIFY_EXPORT int socksify_wire_decode_peer(const uint8_t *in, size_t len,
                                              struct socksify_peer *out);

/* Parse one NAME reply: the 32-byte head (verdict NAME, body_len in bytes 10-11) and
 * exactly body_len bytes of name (len must be 32 + body_len). Writes the name and a NUL
 * into out and returns its length (1..SOCKSIFY_MAX_NAME). -EPROTO for a wrong length,
 * magic or version, a verdict other than NAME, a body_len outside 1..255, or a name
 * that is not printable ASCII without space (33..126); -ERANGE if outlen cannot hold
 * the name and its NUL; -EINVAL for a NULL out. out is left untouched on error. */
SOCKSIFY_EXPORT int socksify_wire_decode_name(const uint8_t *in, size_t len, char *out,
                                              size_t outlen);

/* Write the 36-byte envelope for d into out. Returns SOCKSIFY_DGRAM_SIZE, or -EINVAL
 * for a NULL pointer, outlen < 36, or an unknown kind or family. DATA is written with
 * code 0 whatever d->code holds. */
SOCKSIFY_EXPORT int socksify_wire_encode_dgram(const struct socksify_dgram *d, uint8_t *out,
                                               size_t outlen);

/* Parse the envelope at the start of a datagram of len bytes (len >= 36; the payload
 * follows it). Returns 0, or -EPROTO for a datagram shorter than the envelope, a wrong
 * magic or version, an unknown kind or family (out is then left untouched). The token
 * is not judged here: the caller compares it with its grant's. */
SOCKSIFY_EXPORT int socksify_wire_decode_dgram(const uint8_t *in, size_t len,
                                               struct socksify_dgram *out);

/* The WRAP functions are the Linux shim's own (not exported: the daemon does not load
 * them, and the Windows DLL keeps CONNECT and CARRY). */

/* How many body bytes follow this 32-byte WRAP reply head (len must be 32), or -EPROTO
 * for a wrong length, magic, version or family, a verdict other than WRAP, or a body_len
 * outside 20..SOCKSIFY_WRAP_MAX_BODY. */
int socksify_wire_wrap_body_len(const uint8_t *head, size_t len);

/* Parse one whole WRAP reply (len must be 32 + body_len). Returns 0, or -EPROTO for
 * what socksify_wire_wrap_body_len() rejects, a length other than 32 + body_len, a
 * zero send_len or reply_len, prefixes that do not fill the body exactly, or a reply
 * prefix with bits its mask clears (it could never match); out is then untouched. */
int socksify_wire_decode_wrap(const uint8_t *in, size_t len, struct socksify_wrap *out);

/* 1 if a datagram of len bytes from the relay begins with w's reply prefix (each of
 * its first reply_len bytes b: (b & mask[i]) == reply[i]): its first reply_len bytes
 * are then stripped and the rest is the destination's payload. 0 otherwise. */
int socksify_wire_wrap_match(const struct socksify_wrap *w, const uint8_t *in, size_t len);

/* The local errno for a reply code: 0 for SOCKSIFY_CODE_NONE, EPROTO for unknown codes. */
SOCKSIFY_EXPORT int socksify_wire_errno(unsigned code);

#endif
