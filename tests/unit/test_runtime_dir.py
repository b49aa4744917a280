"""The runtime directory and control socket checks every tool makes before it talks to
a daemon (paths.check_private_dir, client.connect/check_peer), and printable(), which
every reply goes through before it reaches a terminal. No root needed except where
marked (chown to another uid)."""

from __future__ import annotations

import io
import os
import re
import socket
import stat
import threading
from pathlib import Path

import pytest

from socksify import client, render
from socksify.paths import Paths, UnsafeRuntimeDir, check_private_dir
from socksify.printable import printable

ESC = "\x1b"


def private(d: Path) -> Path:
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)   # whatever the umask
    return d


def test_a_0700_directory_of_ours_passes(tmp_path: Path) -> None:
    check_private_dir(private(tmp_path / "rt"))


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701, 0o1777, 0o2700])
def test_any_other_mode_is_refused_naming_the_path(tmp_path: Path, mode: int) -> None:
    d = private(tmp_path / "rt")
    os.chmod(d, mode)
    with pytest.raises(UnsafeRuntimeDir, match=str(d)):
        check_private_dir(d)
    assert stat.S_IMODE(d.lstat().st_mode) == mode   # refused, not repaired


def test_0711_only_for_roots_shared_directory(tmp_path: Path) -> None:
    """0711 is what root's daemon with allow_users makes; a user's own 0711 is not."""
    d = private(tmp_path / "rt")
    os.chmod(d, 0o711)
    why = "its mode is 0711"
    if os.geteuid() == 0:
        check_private_dir(d)
        os.chown(d, 65534, 65534)
        why = "owned by uid 65534"
    with pytest.raises(UnsafeRuntimeDir, match=why):
        check_private_dir(d)


def test_a_symlink_to_a_good_directory_is_refused(tmp_path: Path) -> None:
    good = private(tmp_path / "good")
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(UnsafeRuntimeDir, match="symlink"):
        check_private_dir(link)


def test_a_file_is_refused_and_a_missing_dir_is_missing(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(UnsafeRuntimeDir, match="not a directory"):
        check_private_dir(f)
    with pytest.raises(FileNotFoundError):
        check_private_dir(tmp_path / "none")


@pytest.mark.root("chown to another uid")
def test_another_users_directory_is_refused(tmp_path: Path) -> None:
    d = private(tmp_path / "rt")
    os.chown(d, 65534, 65534)
    with pytest.raises(UnsafeRuntimeDir, match="owned by uid 65534"):
        check_private_dir(d)


def test_ensure_dirs_makes_0700_and_refuses_an_open_one(tmp_path: Path) -> None:
    paths = Paths.from_env({"SOCKSIFY_RUNTIME_DIR": str(tmp_path / "new")})
    paths.ensure_dirs()
    assert stat.S_IMODE(paths.runtime_dir.lstat().st_mode) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    paths = Paths.from_env({"SOCKSIFY_RUNTIME_DIR": str(open_dir)})
    with pytest.raises(UnsafeRuntimeDir, match=str(open_dir)):
        paths.ensure_dirs()
    assert stat.S_IMODE(open_dir.lstat().st_mode) == 0o777   # not adopted


class Listener:
    """A Unix listener that records whether anyone connected and what they sent."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.sock.settimeout(0.3)
        self.received = b""
        self.accepted = 0

    def drain(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (socket.timeout, TimeoutError):
            return
        self.accepted += 1
        with conn:
            conn.settimeout(1.0)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
            except OSError:
                pass


def test_nothing_is_sent_into_an_open_directory(tmp_path: Path) -> None:
    """A listener on control.sock in a 0777 directory: the client refuses before it
    connects, so the listener sees no connection and no byte."""
    d = tmp_path / "rt"
    d.mkdir()
    os.chmod(d, 0o777)
    listener = Listener(d / "control.sock")
    paths = Paths.from_env({"SOCKSIFY_RUNTIME_DIR": str(d)})
    with pytest.raises(client.UnsafeDaemon, match=str(d)):
        client.request(paths, {"op": "session", "via": ["socks5://u:SECRET@h:1"]})
    with pytest.raises(client.UnsafeDaemon):
        client.is_running(paths)
    listener.drain()
    assert (listener.accepted, listener.received) == (0, b"")


def test_check_peer_accepts_our_own_uid() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert client.check_peer(a, "pair") == os.getpid()


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("curl[42] → example.org:443 ünïcode") == \
        "curl[42] → example.org:443 ünïcode"
    assert printable(f"{ESC}]0;owned\x07{ESC}[2J") == "\\x1b]0;owned\\x07\\x1b[2J"
    assert printable("a\nb\rc\td\x7f\x9b") == "a\\x0ab\\x0dc\\x09d\\x7f\\x9b"
    assert printable("evil\u202etxt.exe\u2028") == "evil\\u202etxt.exe\\u2028"
    assert printable(None) == "None" and printable(12) == "12"
    assert printable(printable(ESC)) == printable(ESC)


def test_connections_table_shows_markup_and_escapes_as_text() -> None:
    """App and host names come from the daemon: rich must neither apply markup from
    them nor pass terminal sequences through, on a terminal or a pipe."""
    conn = {"id": 1, "app": f"[blink]x[/blink]{ESC}]8;;http://e/{ESC}\\", "pid": 7,
            "user": f"u{ESC}[31m", "target": "1.2.3.4:80", "host": f"h{ESC}[2J",
            "chain": "[bold]c", "route": f"socks4://1.1.1.1:1 > {ESC}[Ksocks5://h:2",
            "up": 1, "down": 2, "age": 3}
    text = render.connections_text([conn])
    assert ESC not in text
    assert "[blink]x[/blink]\\x1b]8;;http://e/\\x1b\\" in text
    assert "[bold]c" in text and "h\\x1b[2J:80" in text
    out = io.StringIO()
    from rich.console import Console
    console = Console(file=out, force_terminal=True, width=250, color_system="standard",
                      highlight=False, emoji=False)
    render.print_connections([conn], console)
    shown = out.getvalue()
    # only rich's own styling sequences (SGR, "ESC[...m") may appear
    assert not re.search(r"\x1b(?!\[[0-9;]*m)", shown), repr(shown)
    assert "\\x1b[K" in shown and "[blink]x[/blink]" in shown


def test_status_reply_is_printed_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """socksifyd status against a daemon of our own uid (in a 0700 dir) whose reply
    carries escape sequences: printed as visible escapes."""
    from socksify import service
    d = private(tmp_path / "rt")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(d / "control.sock"))
    listener.listen(1)
    reply = (b'{"ok": true, "pid": 1, "version": "\\u001b]0;PWNED\\u0007",'
             b' "policy": "\\u001b[2J/p.toml", "chains": [{"name": "\\u001b[31mred",'
             b' "hops": [{"url": "socks4://\\u001b[Kh:1"}]}]}\n')

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("SOCKSIFY_RUNTIME_DIR", str(d))
    monkeypatch.delenv("SOCKSIFY_SOCKET", raising=False)
    try:
        assert service.main(["status"]) == 0
    finally:
        t.join(5)
        listener.close()
    out = capsys.readouterr().out
    assert ESC not in out and "\x07" not in out
    assert "\\x1b]0;PWNED\\x07" in out and "\\x1b[31mred" in out \
        and "socks4://\\x1b[Kh:1" in out


def test_only_the_sockets_directory_is_needed(tmp_path: Path) -> None:
    """SOCKSIFY_SOCKET in a good directory (root's /run/socksify, say) is reached even
    when this user's own runtime directory does not exist."""
    d = private(tmp_path / "elsewhere")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(d / "control.sock"))
    listener.listen(1)
    with listener:
        paths = Paths.from_env({"SOCKSIFY_SOCKET": str(d / "control.sock"),
                                "SOCKSIFY_RUNTIME_DIR": str(tmp_path / "missing")})
        with client.connect(paths):
            pass


def test_a_socket_through_a_symlinked_directory_is_refused_however_spelled(
        tmp_path: Path) -> None:
    """The command checks the socket's directory from a string (no pathlib on its
    way): "link/./control.sock" and "link//control.sock" must lstat link, as
    Path.parent would, not "link/.", which is the good directory behind it."""
    good = private(tmp_path / "good")
    listener = Listener(good / "control.sock")
    (tmp_path / "link").symlink_to(good)
    for spelled in ("link/./control.sock", "link//control.sock", "link/control.sock"):
        paths = Paths.from_env({"SOCKSIFY_SOCKET": f"{tmp_path}/{spelled}",
                                "SOCKSIFY_RUNTIME_DIR": str(good)})
        assert paths.socket_str == str(paths.socket)
        with pytest.raises(client.UnsafeDaemon, match="symlink"):
            client.request(paths, {"op": "status"})
    listener.drain()
    assert (listener.accepted, listener.received) == (0, b"")
