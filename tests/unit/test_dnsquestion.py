"""The DNS question reader of the res_send()/res_nsend() hooks
(shim/common/dnsquestion.c) on the shared vectors (tests/vectors/dnsquestion.txt): from
C (tests/c/test_dnsquestion.c) and from Python, through the same C code loaded with
cffi, checked against a reading of the message written here."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from test_shim_c import ROOT, run_c_test

VECTORS = ROOT / "tests" / "vectors" / "dnsquestion.txt"
API_CASES = 4   # run_api() in tests/c/test_dnsquestion.c
MAX_NAME = 255


def vectors() -> list[list[str]]:
    return [line.split() for line in VECTORS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def python_reading(msg: bytes) -> tuple[str, int] | None:
    """The question (name, type) of a standard query with one question and plain
    printable labels, else None: the rule the C reader is meant to follow."""
    if len(msg) < 12 or msg[2] & 0xF8 or msg[4:6] != b"\x00\x01":
        return None
    labels, i = [], 12
    while True:
        if i >= len(msg) or msg[i] & 0xC0:
            return None
        n = msg[i]
        i += 1
        if n == 0:
            break
        label = msg[i:i + n]
        if len(label) < n or any(b <= 0x20 or b >= 0x7F or b == 0x2E for b in label):
            return None
        labels.append(label.decode())
        i += n
    if len(msg) - i < 4:
        return None
    return ".".join(labels), int.from_bytes(msg[i:i + 2], "big")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import cffi  # type: ignore[import-untyped,unused-ignore]

    cc = os.environ.get("CC", "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.fail(f"no C compiler ({cc[0]}) to build shim/common/dnsquestion.c")
    lib = tmp_path_factory.mktemp("dnsq") / "libdnsq.so"
    shim = ROOT / "shim"
    subprocess.run([*cc, "-std=gnu11", "-O2", "-shared", "-fPIC", "-D_GNU_SOURCE",
                    f"-I{shim / 'common'}", str(shim / "common" / "dnsquestion.c"),
                    "-o", str(lib)], check=True)
    ffi = cffi.FFI()
    ffi.cdef("int socksify_dns_question(const uint8_t *msg, size_t len, char *name, "
             "size_t namelen, unsigned *qtype);")
    return ffi, ffi.dlopen(str(lib))


def read(reader: Any, msg: bytes) -> tuple[int, str, int]:
    ffi, lib = reader
    name = ffi.new("char[]", MAX_NAME + 1)
    qtype = ffi.new("unsigned *")
    r = int(lib.socksify_dns_question(msg, len(msg), name, MAX_NAME + 1, qtype))
    return r, ffi.string(name).decode() if r >= 0 else "", int(qtype[0])


def test_c_reader_on_the_vectors(tmp_path: Path) -> None:
    passed, _ = run_c_test(tmp_path, "test_dnsquestion", str(VECTORS))
    assert passed == len(vectors()) + API_CASES


@pytest.mark.parametrize("fields", vectors(), ids=lambda f: f"{f[0]}-{f[-1][:20]}")
def test_python_through_cffi_on_the_vectors(reader: Any, fields: list[str]) -> None:
    msg = bytes.fromhex(fields[1])
    r, name, qtype = read(reader, msg)
    if fields[0] == "question":
        want = "" if fields[3] == "." else fields[3]
        assert (r, name, qtype) == (len(want), want, int(fields[2]))
        assert python_reading(msg) == (want, int(fields[2]))
    else:
        assert fields[0] == "bad-question"
        assert r == -getattr(errno, fields[2])
        if fields[2] == "EINVAL":
            assert python_reading(msg) is None


def test_every_kind_is_present() -> None:
    kinds = [f[0] for f in vectors()]
    assert kinds.count("question") >= 5 and kinds.count("bad-question") >= 10


def test_truncations_of_a_good_query_are_refused(reader: Any) -> None:
    """Every prefix of a valid query that cuts into its question is refused (no read
    past the end: the buffer handed over is exactly the prefix)."""
    msg = bytes.fromhex(vectors()[0][1])
    for n in range(len(msg)):
        r, _, _ = read(reader, msg[:n])
        assert r == -errno.EINVAL, n
