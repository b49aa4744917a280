"""The installed shim library, through socksify.shimlib (cffi), against the shared
vectors; plus its symbol table and that it preloads cleanly."""

from __future__ import annotations

import errno
import ipaddress
import os
import platform
import subprocess
from pathlib import Path

import pytest

from socksify import shimlib
from socksify.protocol import control as wire
from socksify.protocol.control import WireError

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "control.txt"
EXPORTS = {"connect", "getpeername", "getaddrinfo", "gethostbyname", "gethostbyname2",
           "gethostbyname_r", "gethostbyname2_r", "getnameinfo", "gethostbyaddr",
           "gethostbyaddr_r", "sendto", "sendmsg", "sendmmsg",
           # carried datagrams (shim/linux/carry.h), and libuv's raw sendmmsg/recvmmsg
           "recv", "recvfrom", "recvmsg", "recvmmsg", "read", "write", "send", "syscall",
           "__read_chk", "__recv_chk", "__recvfrom_chk", "readv", "writev",
           "preadv2", "pwritev2", "preadv64v2", "pwritev64v2",
           # copies of a carried socket are carried (shim/linux/carried.h)
           "dup", "dup2", "__dup2", "dup3", "fcntl", "__fcntl", "fcntl64",
           # a handed-off socket's close tells the daemon (shim/linux/unwrap.h)
           "close", "close_range",
           "execve", "execv", "execl", "execle", "execvp", "execvpe", "execlp", "fexecve",
           "execveat",
           "posix_spawn", "posix_spawnp",
           "socksify_wire_version", "socksify_shim_abi_version",
           "socksify_wire_encode_request", "socksify_wire_encode_connect",
           "socksify_wire_encode_resolve", "socksify_wire_decode_reply",
           "socksify_wire_decode_peer", "socksify_wire_decode_name", "socksify_wire_errno", "socksify_addr_is_loopback",
           "socksify_wire_encode_dgram", "socksify_wire_decode_dgram"}
EXPORTS |= {"res_query", "res_search", "res_querydomain", "res_send", "res_nquery",
            "res_nsearch", "res_nquerydomain", "res_nsend", "__res_query", "__res_search",
            "__res_querydomain", "__res_send", "__res_nquery", "__res_nsearch",
            "__res_nquerydomain", "__res_nsend",
            "getaddrinfo_a", "gai_suspend", "gai_cancel", "gai_error"}  # DNS calls
# x86-64 only (shim/linux/dlsym.c: the hooks are assembly stubs)
if platform.machine() == "x86_64":
    EXPORTS |= {"dlsym", "dlvsym"}


def vectors(kind: str) -> list[tuple[str, dict[str, str]]]:
    found = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split()
        if fields[0] == kind:
            found.append((fields[1], dict(f.split("=", 1) for f in fields[2:])))
    assert found, f"no {kind} vectors"
    return found


@pytest.fixture(scope="module")
def shim() -> shimlib.Shim:
    path = shimlib.library_path()
    assert path.is_file(), f"{path} is missing: run `pip install .` first"
    return shimlib.load()


def test_versions(shim: shimlib.Shim) -> None:
    shimlib.check_versions()
    assert shim.wire_version() == 1 and shim.abi_version() == shimlib.SHIM_ABI_VERSION


@pytest.mark.parametrize("name,f", vectors("request"))
def test_encode_request(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    addr = ipaddress.ip_address(f["addr"]).packed
    args = (int(f["family"]), int(f["socktype"]), int(f["port"]), addr,
            bytes.fromhex(f["session"]))
    assert shim.encode_request(int(f["op"]), *args).hex() == f["hex"]
    if int(f["op"]) == 1:
        assert shim.encode_connect(*args).hex() == f["hex"]


@pytest.mark.parametrize("name,f", vectors("resolve"))
def test_encode_resolve(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    raw = shim.encode_resolve(f["host"], int(f["family"]), bytes.fromhex(f["session"]))
    assert raw.hex() == f["hex"]
    assert raw == wire.ResolveRequest(f["host"], int(f["family"]),
                                      bytes.fromhex(f["session"])).dumps()


@pytest.mark.parametrize("host,family", [
    ("", 0), ("a" * 256, 0), ("a b", 0), ("a\tb", 0), ("a\x7f", 0), ("caf\u00e9.test", 0),
    ("a\0b", 0), ("example.org", 5), ("example.org", 1),
])
def test_encode_resolve_rejects(shim: shimlib.Shim, host: str, family: int) -> None:
    with pytest.raises(ValueError):
        shim.encode_resolve(host, family)


def test_encode_resolve_limits(shim: shimlib.Shim) -> None:
    longest = "a" * 255
    raw = shim.encode_resolve(longest, 6)
    assert len(raw) == 48 + 255 and raw[48:] == longest.encode()
    head = wire.Header.loads(raw[:48])
    assert head.op is wire.Op.RESOLVE and head.family == 6 and head.body_len == 255
    assert shim.encode_resolve(b"!~", 4)[48:] == b"!~"


@pytest.mark.parametrize("name,f", vectors("reply"))
def test_decode_reply(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    rep = shim.decode_reply(bytes.fromhex(f["hex"]))
    assert rep == {"verdict": int(f["verdict"]), "code": int(f["code"]),
                   "flags": int(f["flags"]),
                   "relay_port4": int(f["port4"]), "relay_port6": int(f["port6"]),
                   "token": bytes.fromhex(f["token"])}
    want = 0 if f["errno"] == "0" else getattr(errno, f["errno"])
    assert shim.errno_for(rep["code"]) == want
    with pytest.raises(WireError):
        shim.decode_peer(bytes.fromhex(f["hex"]))


@pytest.mark.parametrize("name,f", vectors("peer-reply"))
def test_decode_peer(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    raw = bytes.fromhex(f["hex"])
    assert shim.decode_peer(raw) == {"family": int(f["family"]), "port": int(f["port"]),
                                     "addr": ipaddress.ip_address(f["addr"]).packed}
    with pytest.raises(WireError):
        shim.decode_reply(raw)


@pytest.mark.parametrize("name,f", vectors("name-reply"))
def test_decode_name(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    raw = bytes.fromhex(f["hex"])
    assert shim.decode_name(raw) == f["host"]
    assert shim.decode_name(raw, len(f["host"]) + 1) == f["host"]
    with pytest.raises(ValueError):     # no room for the NUL
        shim.decode_name(raw, len(f["host"]))
    assert raw == wire.NameReply(f["host"]).dumps()
    with pytest.raises(WireError):
        shim.decode_reply(raw[:32])
    with pytest.raises(WireError):
        shim.decode_peer(raw[:32])


@pytest.mark.parametrize("name,f", vectors("bad-name-reply"))
def test_bad_name_reply(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    with pytest.raises(WireError):
        shim.decode_name(bytes.fromhex(f["hex"]))


@pytest.mark.parametrize("name,f", vectors("bad-reply"))
def test_bad_reply(shim: shimlib.Shim, name: str, f: dict[str, str]) -> None:
    with pytest.raises(WireError):
        shim.decode_reply(bytes.fromhex(f["hex"]))
    with pytest.raises(WireError):
        shim.decode_peer(bytes.fromhex(f["hex"]))


def test_short_reply_and_bad_request(shim: shimlib.Shim) -> None:
    good = bytes.fromhex(vectors("reply")[0][1]["hex"])
    with pytest.raises(WireError):
        shim.decode_reply(good[:-1])
    with pytest.raises(ValueError):
        shim.encode_connect(5, 1, 80, bytes(4))
    with pytest.raises(ValueError):
        shim.encode_request(3, 4, 1, 80, bytes(4))
    peer = bytes.fromhex(vectors("peer-reply")[0][1]["hex"])
    with pytest.raises(WireError):
        shim.decode_peer(peer[:-1])
    with pytest.raises(WireError):
        shim.decode_peer(peer[:6] + b"\x05" + peer[7:])  # unknown family


@pytest.mark.parametrize("host,want", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("0.0.0.0", True), ("::1", True),
    ("::", True), ("::ffff:127.0.0.1", True), ("192.0.2.1", False),
    ("::ffff:192.0.2.1", False), ("2001:db8::1", False),
])
def test_is_loopback(shim: shimlib.Shim, host: str, want: bool) -> None:
    assert shim.is_loopback(shimlib.sockaddr_bytes(host, 80)) is want


def _dynamic_symbols(path: Path, *flags: str) -> list[list[str]]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def test_exports_only_the_abi() -> None:
    path = shimlib.library_path()
    defined = {f[-1] for f in _dynamic_symbols(path, "--defined-only")}
    text = {f[-1] for f in _dynamic_symbols(path, "--defined-only") if f[-2] == "T"}
    assert defined == EXPORTS and text == EXPORTS


def test_no_python_symbols() -> None:
    undefined = [f[-1] for f in _dynamic_symbols(shimlib.library_path(), "--undefined-only")]
    assert undefined, "nm listed nothing"
    assert not [s for s in undefined if s.startswith(("Py", "_Py"))]


def test_preloads_with_bind_now() -> None:
    env = dict(os.environ, LD_BIND_NOW="1", LD_PRELOAD=str(shimlib.library_path()))
    run = subprocess.run(["/bin/true"], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_main_prints_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert shimlib.main() == 0
    assert capsys.readouterr().out.strip() == str(shimlib.library_path())
