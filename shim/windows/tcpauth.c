/* The client's half of the TCP control handshake (socksify_tcpauth.h, docs/wire.md)
 * with Windows' own primitives: BCrypt's HMAC-SHA256 and its system RNG. */
#include <windows.h>
#include <bcrypt.h>
#include <string.h>

#include "socksify_tcpauth.h"

#define LABEL_SIZE (sizeof SOCKSIFY_TCPAUTH_DAEMON_LABEL - 1)

_Static_assert(sizeof SOCKSIFY_TCPAUTH_CLIENT_LABEL - 1 == LABEL_SIZE,
               "both labels have the same length");

int socksify_tcpauth_nonce(uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE])
{
    return BCRYPT_SUCCESS(BCryptGenRandom(NULL, nc, SOCKSIFY_TCPAUTH_NONCE_SIZE,
                                          BCRYPT_USE_SYSTEM_PREFERRED_RNG)) ? 0 : -1;
}

void socksify_tcpauth_hello(const uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE],
                            uint8_t out[SOCKSIFY_TCPAUTH_HELLO_SIZE])
{
    memcpy(out, SOCKSIFY_TCPAUTH_MAGIC, SOCKSIFY_TCPAUTH_MAGIC_SIZE);
    memcpy(out + SOCKSIFY_TCPAUTH_MAGIC_SIZE, nc, SOCKSIFY_TCPAUTH_NONCE_SIZE);
}

/* HMAC-SHA256(key, label || first || second); 0 or -1. */
static int mac(const uint8_t *key, const char *label, const uint8_t *first,
               const uint8_t *second, uint8_t out[SOCKSIFY_TCPAUTH_MAC_SIZE])
{
    BCRYPT_ALG_HANDLE alg = NULL;
    BCRYPT_HASH_HANDLE hash = NULL;
    int ok = 0;

    if (BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(&alg, BCRYPT_SHA256_ALGORITHM, NULL,
                                                   BCRYPT_ALG_HANDLE_HMAC_FLAG))
        && BCRYPT_SUCCESS(BCryptCreateHash(alg, &hash, NULL, 0, (PUCHAR)key,
                                           SOCKSIFY_TCPAUTH_KEY_SIZE, 0))
        && BCRYPT_SUCCESS(BCryptHashData(hash, (PUCHAR)label, LABEL_SIZE, 0))
        && BCRYPT_SUCCESS(BCryptHashData(hash, (PUCHAR)first,
                                         SOCKSIFY_TCPAUTH_NONCE_SIZE, 0))
        && BCRYPT_SUCCESS(BCryptHashData(hash, (PUCHAR)second,
                                         SOCKSIFY_TCPAUTH_NONCE_SIZE, 0))
        && BCRYPT_SUCCESS(BCryptFinishHash(hash, out, SOCKSIFY_TCPAUTH_MAC_SIZE, 0)))
        ok = 1;
    if (hash != NULL)
        BCryptDestroyHash(hash);
    if (alg != NULL)
        BCryptCloseAlgorithmProvider(alg, 0);
    return ok ? 0 : -1;
}

int socksify_tcpauth_check_answer(const uint8_t key[SOCKSIFY_TCPAUTH_KEY_SIZE],
                                  const uint8_t nc[SOCKSIFY_TCPAUTH_NONCE_SIZE],
                                  const uint8_t answer[SOCKSIFY_TCPAUTH_ANSWER_SIZE],
                                  uint8_t proof[SOCKSIFY_TCPAUTH_PROOF_SIZE])
{
    const uint8_t *nd = answer, *theirs = answer + SOCKSIFY_TCPAUTH_NONCE_SIZE;
    uint8_t want[SOCKSIFY_TCPAUTH_MAC_SIZE];
    uint8_t diff = 0;

    if (mac(key, SOCKSIFY_TCPAUTH_DAEMON_LABEL, nc, nd, want) != 0)
        return -1;
    for (size_t i = 0; i < sizeof want; i++)   /* constant time */
        diff |= (uint8_t)(want[i] ^ theirs[i]);
    SecureZeroMemory(want, sizeof want);
    if (diff != 0)
        return -1;
    return mac(key, SOCKSIFY_TCPAUTH_CLIENT_LABEL, nd, nc, proof);
}
