"""The TCP control listener's mutual proof (docs/wire.md, "The TCP control
handshake"), no I/O.

Both ends hold the 16-byte key from control.tcp; neither ever sends it. The client
opens with HELLO (magic and a fresh client nonce); the daemon answers with its own
nonce and an HMAC-SHA256 under the key over both nonces; the client checks that before
it sends anything else, then proves itself with another HMAC (a different label, the
nonces the other way round), which the daemon checks before it reads a request. A
stale control.tcp whose port another user took over thus gets nothing from the client
but a random nonce, and the client refuses the squatter's answer."""

from __future__ import annotations

import hashlib
import hmac

MAGIC = b"SKTC"
KEY_SIZE = 16
NONCE_SIZE = 16
MAC_SIZE = 32
HELLO_SIZE = len(MAGIC) + NONCE_SIZE          # client -> daemon: magic, nc
ANSWER_SIZE = NONCE_SIZE + MAC_SIZE           # daemon -> client: nd, daemon MAC
PROOF_SIZE = MAC_SIZE                         # client -> daemon: client MAC
DAEMON_LABEL = b"socksify tcp control v1 daemon"
CLIENT_LABEL = b"socksify tcp control v1 client"


class ProofError(ValueError):
    """The other end did not prove it holds the key (or spoke another protocol)."""


def _mac(key: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    if len(key) != KEY_SIZE or len(first) != NONCE_SIZE or len(second) != NONCE_SIZE:
        raise ValueError("tcpauth: key and nonces are 16 bytes each")
    return hmac.new(key, label + first + second, hashlib.sha256).digest()


def daemon_mac(key: bytes, nc: bytes, nd: bytes) -> bytes:
    """HMAC-SHA256(key, DAEMON_LABEL || nc || nd)."""
    return _mac(key, DAEMON_LABEL, nc, nd)


def client_mac(key: bytes, nc: bytes, nd: bytes) -> bytes:
    """HMAC-SHA256(key, CLIENT_LABEL || nd || nc)."""
    return _mac(key, CLIENT_LABEL, nd, nc)


def hello(nc: bytes) -> bytes:
    if len(nc) != NONCE_SIZE:
        raise ValueError("tcpauth: the client nonce is 16 bytes")
    return MAGIC + nc


def parse_hello(data: bytes) -> bytes:
    """The client nonce from a HELLO; ProofError if it is not one."""
    if len(data) != HELLO_SIZE or data[:len(MAGIC)] != MAGIC:
        raise ProofError(f"not a TCP control hello: {data[:8]!r}")
    return data[len(MAGIC):]


def answer(key: bytes, nc: bytes, nd: bytes) -> bytes:
    """The daemon's answer to a HELLO: nd, then its MAC."""
    return nd + daemon_mac(key, nc, nd)


def check_answer(key: bytes, nc: bytes, data: bytes) -> bytes:
    """The daemon nonce from an answer whose MAC is right (constant-time compare);
    ProofError otherwise."""
    if len(data) != ANSWER_SIZE:
        raise ProofError("short answer")
    nd, mac = data[:NONCE_SIZE], data[NONCE_SIZE:]
    if not hmac.compare_digest(mac, daemon_mac(key, nc, nd)):
        raise ProofError("the listener does not hold this daemon's key")
    return nd


def proof(key: bytes, nc: bytes, nd: bytes) -> bytes:
    """The client's proof, sent once the answer checked out."""
    return client_mac(key, nc, nd)


def check_proof(key: bytes, nc: bytes, nd: bytes, data: bytes) -> None:
    """ProofError unless data is the client's proof for these nonces."""
    if len(data) != PROOF_SIZE or not hmac.compare_digest(data, client_mac(key, nc, nd)):
        raise ProofError("the client does not hold this daemon's key")
