"""Can the shim protect this program? The loader only preloads the shim into
dynamically linked programs of the shim's own architecture, ignores it for setuid and
setgid programs, and Go programs make their system calls without libc: for all of
those a socksified run would silently go direct, so socksify refuses them unless told
otherwise."""

from __future__ import annotations

import mmap
import os
import stat
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike

    Shim = str | PathLike[str]

PT_INTERP = 3
GO_BUILDINFO = b"\xff Go buildinf:"
MAX_SCRIPT_DEPTH = 4


class Unprotectable(Exception):
    """The program would run without the shim; the message says why and what to do."""


def find_program(command: str) -> str | None:
    """The file exec would run for `command`: the first executable file of that name
    on $PATH (as shutil.which finds it; shutil itself costs `socksify CMD` its
    start-up). A string: pathlib costs it too. $PATH read as os.get_exec_path() reads
    it, without its import of warnings."""
    if "/" in command:
        return command
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", command)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def check(command: str, shim: Shim, depth: int = 0) -> None:
    """Raise Unprotectable if `command` (a name on PATH or a path) cannot load the
    shim. Unknown formats pass: exec itself will say what is wrong with them."""
    path = find_program(command)
    if path is None or not os.path.isfile(path):
        return
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return
    _check_privileges(path, st)
    if head.startswith(b"#!") and depth < MAX_SCRIPT_DEPTH:
        interpreter = _interpreter(path)
        if interpreter:
            check(interpreter, shim, depth + 1)
        return
    if head[:4] == b"\x7fELF":
        _check_elf(path, head, shim)


def _check_privileges(path: str, st: os.stat_result) -> None:
    if st.st_mode & stat.S_ISUID and st.st_uid != os.geteuid():
        raise Unprotectable(f"{path} is setuid: the loader ignores LD_PRELOAD for it, "
                            "so it would run unprotected")
    if st.st_mode & stat.S_ISGID and st.st_gid not in (os.getegid(), *os.getgroups()):
        raise Unprotectable(f"{path} is setgid: the loader ignores LD_PRELOAD for it, "
                            "so it would run unprotected")
    if os.geteuid() != 0:
        try:
            os.getxattr(path, "security.capability")
        except OSError:
            return
        raise Unprotectable(f"{path} has file capabilities: the loader ignores "
                            "LD_PRELOAD for it, so it would run unprotected")


def _interpreter(path: str) -> str | None:
    """The program that runs a #! script (through /usr/bin/env if it is that)."""
    try:
        with open(path, "rb") as f:
            line = f.readline(512).decode(errors="replace")
    except OSError:
        return None
    words = line[2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return rest[0] if rest else None
    return words[0]


def _elf_ident(head: bytes) -> tuple[str, int, int]:
    """(struct byte order, ELF class, e_machine)."""
    order = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(order + "H", head, 18)
    return order, head[4], machine


def _check_elf(path: str, head: bytes, shim: Shim) -> None:
    order, klass, machine = _elf_ident(head)
    try:
        with open(shim, "rb") as f:
            shim_ident = _elf_ident(f.read(64))
    except OSError:
        shim_ident = (order, klass, machine)
    if (klass, machine) != shim_ident[1:]:
        raise Unprotectable(f"{path} is built for another architecture (ELF class "
                            f"{klass}, machine {machine}) than the shim; the loader "
                            "would skip the shim and it would run unprotected")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if klass == 2:
            phoff, = struct.unpack_from(order + "Q", m, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", m, 54)
        else:
            phoff, = struct.unpack_from(order + "I", m, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", m, 42)
        types = [struct.unpack_from(order + "I", m, phoff + i * phentsize)[0]
                 for i in range(phnum)]
        if PT_INTERP not in types:
            raise Unprotectable(f"{path} is statically linked: the shim cannot load "
                                "into it, so its connections would not be socksified")
        if m.find(GO_BUILDINFO) != -1:
            raise Unprotectable(f"{path} is a Go program: Go makes its system calls "
                                "without libc, so the shim would never see its "
                                "connections")
