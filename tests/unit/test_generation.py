"""The policy generation file the shims read to trust cached DIRECT answers
(daemon/socksify/generation.py, docs/wire.md "Caching")."""

from __future__ import annotations

import os
from pathlib import Path

from socksify.generation import SIZE, GenerationFile
from socksify.paths import Paths
from socksify.protocol import control as wire


def read(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert len(data) == SIZE
    return int.from_bytes(data[:8], "big"), int.from_bytes(data[8:], "big")


def test_publish_reload_withdraw_in_place(tmp_path: Path) -> None:
    path = tmp_path / "policy.gen"
    gen = GenerationFile(path)
    first = gen.publish()
    assert first != 0 and read(path) == (first, os.getpid())
    inode = path.stat().st_ino
    second = gen.publish()                       # a reload
    assert second not in (0, first) and read(path) == (second, os.getpid())
    gen.withdraw()                               # the daemon stops
    assert read(path) == (0, 0) and gen.value == 0
    assert path.stat().st_ino == inode           # rewritten, never replaced
    assert GenerationFile(path).publish() != 0   # a restarted daemon reuses the file
    assert path.stat().st_ino == inode


def test_unwritable_file_disables_caching(tmp_path: Path) -> None:
    gen = GenerationFile(tmp_path / "missing-dir" / "policy.gen")
    gen.publish()
    assert gen.value == 0                        # so no DIRECT answer says CACHE


def test_file_sits_beside_the_control_socket(tmp_path: Path) -> None:
    paths = Paths.from_env({"SOCKSIFY_RUNTIME_DIR": str(tmp_path)})
    assert paths.generation_file == tmp_path / "policy.gen"
    paths = Paths.from_env({"SOCKSIFY_SOCKET": str(tmp_path / "my.sock")})
    assert paths.generation_file == tmp_path / "my.sock.gen"


def test_cached_direct_reply_carries_the_generation() -> None:
    raw = wire.Reply.cached_direct(0x0102030405060708).dumps()
    rep = wire.Reply.loads(raw)
    assert rep.verdict is wire.Verdict.DIRECT and rep.flags == wire.FLAG_CACHE
    assert rep.token[:8] == bytes.fromhex("0102030405060708") and rep.token[8:] == bytes(8)
