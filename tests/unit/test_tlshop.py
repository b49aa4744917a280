"""The TLS hop's session and pump (chains/tlshop.py) against a local Python TLS
server with a certificate made here: bytes intact, a half-close carried each way
(close_notify), a session cut without close_notify reaching the program as a reset,
and certificate checks (untrusted CA, wrong name) refused with EACCES."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Callable

import pytest

from conftest import skip_or_fail
from socksify.chains import tlshop
from socksify.errors import ChainError
from socksify.proxies import Proxy
from socksify.sockstream import RawStream


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tlscert")
    key, pem = d / "k.pem", d / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                    str(pem), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True,
                   timeout=60)
    return pem, key


def _serve(cert: tuple[Path, Path], behave: Callable[[ssl.SSLSocket], None]
           ) -> tuple[int, threading.Thread, socket.socket]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    lst.settimeout(10)

    def run() -> None:
        try:
            conn, _ = lst.accept()
            conn.settimeout(10)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                behave(tls)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return int(lst.getsockname()[1]), t, lst


def _client(port: int, hop: Proxy, work: Callable[[socket.socket], object]) -> object:
    """wrap() a connection to port, then run `work` on the plaintext end (blocking,
    in a thread) while the pump runs; returns what work returned or raised."""
    async def main() -> object:
        raw = socket.create_connection(("127.0.0.1", port))
        try:
            stream = await tlshop.wrap(RawStream(raw, owned=True), hop, 0, 5.0, "t")
        except ChainError as exc:
            return exc
        stream.sock.setblocking(True)
        stream.sock.settimeout(10)

        def guarded() -> object:
            try:
                return work(stream.sock)
            except OSError as exc:
                return exc
        try:
            return await asyncio.get_running_loop().run_in_executor(None, guarded)
        finally:
            stream.sock.close()
            await asyncio.sleep(0.05)
    return asyncio.run(main())


def _recv_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(1 << 20):
        out += chunk
    return out


def _hop(port: int, ca: Path | None, name: str = "localhost") -> Proxy:
    return dataclasses.replace(Proxy.parse(f"https://{name}:{port}"),
                               ca_file=str(ca) if ca else None)


def test_half_close_is_carried_both_ways(cert: tuple[Path, Path]) -> None:
    """The program sends, shuts down its side (close_notify); the server reads to
    that end, answers after it, and closes (close_notify): the program gets the
    answer and then EOF."""
    def behave(tls: ssl.SSLSocket) -> None:
        got = b""
        while chunk := tls.recv(65536):
            got += chunk
        tls.sendall(hashlib.sha256(got).hexdigest().encode())
        tls.unwrap()
    port, t, lst = _serve(cert, behave)
    payload = os.urandom(3 << 20)

    def work(sock: socket.socket) -> bytes:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return _recv_all(sock)
    try:
        assert _client(port, _hop(port, cert[0]), work) == \
            hashlib.sha256(payload).hexdigest().encode()
    finally:
        t.join(10)
        lst.close()


@pytest.mark.parametrize("reads", ["as this Python reads it", "as Python 3.11.2 does"])
def test_cut_session_is_a_reset_not_an_eof(cert: tuple[Path, Path], reads: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A TCP FIN with no close_notify (a truncation) must not look like the end,
    whether the session raises SSLEOFError for it (3.11.7) or reads b"" (3.11.2,
    Debian 12's python3)."""
    if reads != "as this Python reads it":
        real = ssl.SSLObject.read

        def read_eof_as_empty(self: ssl.SSLObject, *args: object) -> object:
            try:
                return real(self, *args)  # type: ignore[arg-type]
            except ssl.SSLEOFError:
                return b""
        monkeypatch.setattr(ssl.SSLObject, "read", read_eof_as_empty)

    def behave(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"partial")
        socket.socket.shutdown(tls, socket.SHUT_RDWR)
    port, t, lst = _serve(cert, behave)
    try:
        got = _client(port, _hop(port, cert[0]), _recv_all)
        assert isinstance(got, ConnectionResetError), got
    finally:
        t.join(10)
        lst.close()


@pytest.mark.parametrize("how", ["untrusted", "wrong name"])
def test_certificate_refused(cert: tuple[Path, Path], how: str) -> None:
    port, t, lst = _serve(cert, lambda tls: None)
    hop = _hop(port, None) if how == "untrusted" else _hop(port, cert[0], "127.0.0.1")
    try:
        got = _client(port, hop, _recv_all)
        assert isinstance(got, ChainError) and got.errno == errno.EACCES, got
        assert "TLS certificate refused" in str(got)
    finally:
        t.join(10)
        lst.close()
