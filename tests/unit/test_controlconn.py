"""controlconn.py, the command's control connection without the socket and json
modules: its lines are the json module's (encode writes json.dumps' bytes, decode reads
what json.loads reads, the fallback without the C scanner too), its line reader splits
a socket's bytes as makefile().readline() would, and an endless line is refused."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socksify import controlconn

SCALARS = (st.none() | st.booleans() | st.integers() | st.text()
           | st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=12)
OBJECTS = st.dictionaries(st.text(max_size=8), VALUES, max_size=6)


@settings(max_examples=400, deadline=None)
@given(OBJECTS)
def test_encode_writes_what_json_dumps_writes(obj: dict[str, object]) -> None:
    line = controlconn.encode(obj)
    assert line == json.dumps(obj).encode() + b"\n"


@settings(max_examples=400, deadline=None)
@given(OBJECTS, st.sampled_from(["", " ", "\r", "\t "]))
def test_decode_reads_what_json_loads_reads(obj: dict[str, object], pad: str) -> None:
    line = (pad + json.dumps(obj, ensure_ascii=False) + pad + "\n").encode(
        "utf-8", "surrogatepass")
    try:
        want = json.loads(line)
    except ValueError:          # a lone surrogate is not UTF-8: both refuse it
        with pytest.raises(ValueError):
            controlconn.decode(line)
        return
    assert controlconn.decode(line) == want


def test_without_the_c_scanner_json_loads_decides(monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    assert controlconn._SCAN is not None        # CPython: the C scanner is used
    monkeypatch.setattr(controlconn, "_SCAN", None)
    assert controlconn.decode(b'{"ok": true, "session": "a\\u00e9"}\n') == \
        {"ok": True, "session": "a\u00e9"}
    with pytest.raises(ValueError):
        controlconn.decode(b"[1]\n")


@pytest.mark.parametrize("line", [b"", b"\n", b"nope\n", b"[1]\n", b'"x"\n',
                                  b'{"a": 1} {"b": 2}\n', b'{"a": \n', b"\xff\n"])
def test_anything_but_one_object_is_a_value_error(line: bytes) -> None:
    with pytest.raises(ValueError):
        controlconn.decode(line)


def test_what_cannot_be_sent_is_refused() -> None:
    for obj in ({"x": float("nan")}, {"x": float("inf")}):
        with pytest.raises(ValueError):
            controlconn.encode(obj)
    for obj in ({1: "x"}, {"x": b"bytes"}, {"x": {1, 2}}):
        with pytest.raises(TypeError):
            controlconn.encode(obj)


def test_the_reader_splits_lines_across_any_chunks() -> None:
    a, b = socket.socketpair()
    lines = [b'{"a": 1}\n', b"\n", b'{"text": "' + b"x" * 70000 + b'"}\n', b"tail"]
    data = b"".join(lines)

    def dribble() -> None:
        with a:
            for i in range(0, len(data), 7):
                a.sendall(data[i:i + 7])

    sender = threading.Thread(target=dribble)
    sender.start()
    reader = controlconn.LineReader(b)
    assert [reader.readline() for _ in lines] == lines
    assert reader.readline() == b""
    assert list(reader) == []
    sender.join()
    b.close()


def test_an_endless_line_is_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        reader = controlconn.LineReader(b)
        chunk = b"y" * 65536

        def flood() -> None:
            try:
                for _ in range(controlconn.MAX_LINE // len(chunk) + 4):
                    a.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        with pytest.raises(ValueError, match="over"):
            reader.readline()
        b.shutdown(socket.SHUT_RDWR)
        sender.join(10)


def test_a_closed_connection_is_daemon_unavailable() -> None:
    a, b = socket.socketpair()
    a.close()
    with b, pytest.raises(controlconn.DaemonUnavailable):
        controlconn.read_message(controlconn.LineReader(b))
