/* The TCP control handshake (docs/wire.md, "The TCP control handshake"): the single C
 * definition. daemon/socksify/protocol/tcpauth.py is the Python one;
 * tests/vectors/tcpauth.txt holds byte-level vectors both read.
 *
 *   client -> daemon  HELLO   "SKTC", nc (16 random bytes)                    20 bytes
 *   daemon -> client  ANSWER  nd (16), HMAC-SHA256(key, DAEMON_LABEL nc nd)   48 bytes
 *   client -> daemon  PROOF   HMAC-SHA256(key, CLIENT_LABEL nd nc)            32 bytes
 *
 * The key is control.tcp's 16 bytes, never sent. The client checks ANSWER before it
 * sends anything else; the daemon checks PROOF before it reads a request. Used by the
 * Windows DLL (shim/windows/tcpauth.c, BCrypt); the Linux shim has no TCP control.
 */
#ifndef SOCKSIFY_TCPAUTH_H
#define SOCKSIFY_TCPAUTH_H

#include <stddef.h>
#include <stdint.h>

#define SOCKSIFY_TCPAUTH_MAGIC        "SKTC"
#define SOCKSIFY_TCPAUTH_MAGIC_SIZE   4
#define SOCKSIFY_TCPAUTH_KEY_SIZE     16
#define SOCKSIFY_TCPAUTH_NONCE_SIZE   16
#define SOCKSIFY_TCPAUTH_MAC_SIZE     32
#define SOCKSIFY_TCPAUTH_HELLO_SIZE   20  /* magic, nc */
#define SOCKSIFY_TCPAUTH_ANSWER_SIZE  48  /* nd, daemon MAC */
#define SOCKSIFY_TCPAUTH_PROOF_SIZE   32  /* client MAC */
#define SOCKSIFY_TCPAUTH_DAEMON_LABEL "socksify tcp control v1 daemon"
#define SOCKSIFY_TCPAUTH_CLIENT_LABEL "socksify tcp control v1 client"

/* nc: 16 bytes from the system's RNG. 0, or -1 if it failed (then do not connect). */
int socksify_tcpauth_nonce(uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE]);

/* HELLO for client nonce nc. */
void socksify_tcpauth_hello(const uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE],
                            uint8_t out[SOCKSIFY_TCPAUTH_HELLO_SIZE]);

/* Check the daemon's ANSWER to our HELLO (constant-time compare) and, if it holds the
 * key, write our PROOF: 0; -1 if it does not (or HMAC failed): send nothing more. */
int socksify_tcpauth_check_answer(const uint8_t key[SOCKSIFY_TCPAUTH_KEY_SIZE],
                                  const uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE],
                                  const uint8_t answer[SOCKSIFY_TCPAUTH_ANSWER_SIZE],
                                  uint8_t proof[SOCKSIFY_TCPAUTH_PROOF_SIZE]);

#endif
