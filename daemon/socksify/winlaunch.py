"""The Windows launcher: `socksify COMMAND` on Windows (docs/windows.md).

It starts the user's daemon if none answers (unless SOCKSIFY_CONTROL_FILE names one
elsewhere), registers a session with it over the loopback TCP control listener
(controlfile.py: the control file gives the port and the key), creates COMMAND
suspended with CreateProcessW, injects the socksify DLL (VirtualAllocEx,
WriteProcessMemory, CreateRemoteThread on LoadLibraryW), resumes it, waits, and returns
its exit code. kernel32 is driven through cffi in ABI mode. Anything that goes wrong
before the program runs (no DLL, a 32-bit program, access denied, the DLL failing to
load) terminates the suspended process: nothing is left running unprotected.

This module imports on Linux too (for mypy and the unit tests); the Windows calls are
made only from main().
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from . import client
from .paths import Paths
from .printable import printable

CREATE_SUSPENDED = 0x4
CREATE_UNICODE_ENVIRONMENT = 0x400
STARTF_USESTDHANDLES = 0x100
HANDLE_FLAG_INHERIT = 0x1
MEM_COMMIT_RESERVE = 0x1000 | 0x2000
MEM_RELEASE = 0x8000
PAGE_READWRITE = 0x04
WAIT_OBJECT_0 = 0
INFINITE = 0xFFFFFFFF
INJECT_TIMEOUT_MS = 30000
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_BAD_EXE_FORMAT = 193

_CDEF = """
typedef struct {
    uint32_t cb; wchar_t *lpReserved; wchar_t *lpDesktop; wchar_t *lpTitle;
    uint32_t dwX, dwY, dwXSize, dwYSize, dwXCountChars, dwYCountChars;
    uint32_t dwFillAttribute, dwFlags;
    uint16_t wShowWindow, cbReserved2; uint8_t *lpReserved2;
    void *hStdInput, *hStdOutput, *hStdError;
} STARTUPINFOW;
typedef struct {
    void *hProcess; void *hThread; uint32_t dwProcessId; uint32_t dwThreadId;
} PROCESS_INFORMATION;
int CreateProcessW(const wchar_t *app, wchar_t *cmd, void *pa, void *ta, int inherit,
                   uint32_t flags, void *env, const wchar_t *cwd, STARTUPINFOW *si,
                   PROCESS_INFORMATION *pi);
void *VirtualAllocEx(void *proc, void *addr, size_t size, uint32_t type,
                     uint32_t protect);
int VirtualFreeEx(void *proc, void *addr, size_t size, uint32_t type);
int WriteProcessMemory(void *proc, void *addr, const void *buf, size_t size,
                       size_t *written);
void *CreateRemoteThread(void *proc, void *sa, size_t stack, void *start, void *param,
                         uint32_t flags, uint32_t *tid);
uint32_t ResumeThread(void *thread);
uint32_t WaitForSingleObject(void *h, uint32_t ms);
int GetExitCodeThread(void *h, uint32_t *code);
int GetExitCodeProcess(void *h, uint32_t *code);
int TerminateProcess(void *h, uint32_t code);
int CloseHandle(void *h);
void *GetModuleHandleW(const wchar_t *name);
void *GetProcAddress(void *mod, const char *name);
int IsWow64Process(void *proc, int *wow);
void *GetStdHandle(uint32_t which);
int SetHandleInformation(void *h, uint32_t mask, uint32_t flags);
uint32_t GetLastError(void);
"""


class LaunchError(RuntimeError):
    """COMMAND cannot be run socksified; exit_code is what socksify returns."""

    def __init__(self, message: str, exit_code: int = 126) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def control_file(env: dict[str, str]) -> Path:
    """The daemon's control file: SOCKSIFY_CONTROL_FILE, else RUNTIME_DIR\\control.tcp
    (the DLL looks in the same places)."""
    return client.control_file(Paths.from_env(env), env)


def dll_path(env: dict[str, str]) -> Path:
    """SOCKSIFY_DLL, else the DLL shipped in the package (socksify/_shim/)."""
    if env.get("SOCKSIFY_DLL"):
        return Path(env["SOCKSIFY_DLL"])
    return Path(__file__).resolve().parent / "_shim" / "socksify.dll"


def open_control(path: Path, timeout: float = 5.0) -> socket.socket:
    """A connection to the daemon's TCP control listener, the handshake done."""
    try:
        return client.connect_tcp(path, timeout)
    except client.DaemonUnavailable as exc:
        raise LaunchError(f"no socksify daemon: {exc}", 1) from None


class TcpSession:
    """This command's session, over the TCP control listener; it lasts as long as the
    connection. The daemon's lines about the command's connections are printed."""

    def __init__(self, path: Path, request: dict[str, Any], quiet: bool) -> None:
        self.sock = open_control(path)
        self.stream = self.sock.makefile("rb")
        self.quiet = quiet
        self.sock.sendall(json.dumps({**request, "session": None}).encode() + b"\n")
        line = self.stream.readline()
        try:
            reply = json.loads(line) if line else {"error": "the daemon closed"}
        except ValueError:
            reply = {"error": f"unexpected reply {line[:80]!r}"}
        if not reply.get("ok"):
            self.sock.close()
            raise LaunchError(f"session refused: {printable(reply.get('error'))}", 2)
        self.id = str(reply["session"])
        self.closing = threading.Event()
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._events, daemon=True)
        self.thread.start()

    def _events(self) -> None:
        try:
            for line in self.stream:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") in ("connection", "lookup") and not self.quiet:
                    print(f"socksify: {printable(event.get('text'))}",
                          file=sys.stderr, flush=True)
        except OSError:
            pass
        if not self.quiet and not self.closing.is_set():
            print("socksify: the daemon went away: connections are refused",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self.closing.set()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.thread.join(timeout=2.0)
        self.sock.close()


def _kernel32() -> tuple[Any, Any]:
    import cffi  # type: ignore[import-untyped,unused-ignore]
    ffi: Any = cffi.FFI()
    ffi.cdef(_CDEF)
    return ffi, ffi.dlopen("kernel32.dll")


def env_block(env: dict[str, str]) -> str:
    """A CREATE_UNICODE_ENVIRONMENT block, sorted as Windows wants it."""
    items = sorted(env.items(), key=lambda kv: kv[0].upper())
    return "".join(f"{k}={v}\0" for k, v in items) + "\0"


def inject(ffi: Any, k32: Any, process: Any, dll: Path) -> None:
    """Load dll into the suspended process; LaunchError if it cannot be."""
    wow = ffi.new("int *")
    if k32.IsWow64Process(process, wow) and wow[0]:
        raise LaunchError("it is a 32-bit program; socksify's DLL is 64-bit only")
    path = ffi.new("wchar_t[]", str(dll))
    size = ffi.sizeof(path)
    remote = k32.VirtualAllocEx(process, ffi.NULL, size, MEM_COMMIT_RESERVE,
                                PAGE_READWRITE)
    if remote == ffi.NULL:
        raise _win_error(k32, "cannot allocate memory in the new process")
    try:
        if not k32.WriteProcessMemory(process, remote, path, size, ffi.NULL):
            raise _win_error(k32, "cannot write into the new process")
        load = k32.GetProcAddress(k32.GetModuleHandleW("kernel32.dll"), b"LoadLibraryW")
        thread = k32.CreateRemoteThread(process, ffi.NULL, 0, load, remote, 0, ffi.NULL)
        if thread == ffi.NULL:
            raise _win_error(k32, "cannot start a thread in the new process")
        try:
            if k32.WaitForSingleObject(thread, INJECT_TIMEOUT_MS) != WAIT_OBJECT_0:
                raise LaunchError(f"loading {dll} into the new process did not finish "
                                  f"within {INJECT_TIMEOUT_MS // 1000}s")
            code = ffi.new("uint32_t *")
            if not k32.GetExitCodeThread(thread, code) or code[0] == 0:
                raise LaunchError(f"the new process could not load {dll}")
        finally:
            k32.CloseHandle(thread)
    finally:
        k32.VirtualFreeEx(process, remote, 0, MEM_RELEASE)


def _win_error(k32: Any, what: str) -> LaunchError:
    err = int(k32.GetLastError())
    if err == ERROR_ACCESS_DENIED:
        return LaunchError(f"{what}: access denied")
    return LaunchError(f"{what}: Windows error {err}")


def run(command: list[str], env: dict[str, str], dll: Path) -> int:
    """Create COMMAND suspended, inject dll, resume, wait; its exit code."""
    ffi, k32 = _kernel32()
    si = ffi.new("STARTUPINFOW *")
    si.cb = ffi.sizeof("STARTUPINFOW")
    si.dwFlags = STARTF_USESTDHANDLES
    for field, which in (("hStdInput", -10), ("hStdOutput", -11), ("hStdError", -12)):
        handle = k32.GetStdHandle(which & 0xFFFFFFFF)
        if handle not in (ffi.NULL, ffi.cast("void *", -1)):
            k32.SetHandleInformation(handle, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT)
        setattr(si, field, handle)
    pi = ffi.new("PROCESS_INFORMATION *")
    cmdline = ffi.new("wchar_t[]", subprocess.list2cmdline(command))
    block = ffi.new("wchar_t[]", env_block(env))
    if not k32.CreateProcessW(ffi.NULL, cmdline, ffi.NULL, ffi.NULL, 1,
                              CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT, block,
                              ffi.NULL, si, pi):
        err = int(k32.GetLastError())
        if err in (ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND):
            raise LaunchError(f"{command[0]}: command not found", 127)
        if err == ERROR_ACCESS_DENIED:
            raise LaunchError(f"{command[0]}: access denied", 126)
        if err == ERROR_BAD_EXE_FORMAT:
            raise LaunchError(f"{command[0]}: not a Windows program for this machine",
                              126)
        raise LaunchError(f"{command[0]}: cannot start it: Windows error {err}", 126)
    try:
        try:
            inject(ffi, k32, pi.hProcess, dll)
        except LaunchError:
            k32.TerminateProcess(pi.hProcess, 126)
            k32.WaitForSingleObject(pi.hProcess, 5000)
            raise
        k32.ResumeThread(pi.hThread)
        while k32.WaitForSingleObject(pi.hProcess, 500) != WAIT_OBJECT_0:
            pass
        code = ffi.new("uint32_t *")
        k32.GetExitCodeProcess(pi.hProcess, code)
        return int(code[0])
    except KeyboardInterrupt:
        k32.TerminateProcess(pi.hProcess, 130)
        return 130
    finally:
        k32.CloseHandle(pi.hThread)
        k32.CloseHandle(pi.hProcess)


def _ensure_daemon(env: dict[str, str], verbose: bool) -> None:
    """Start this user's daemon if none answers, as on Linux. Not when
    SOCKSIFY_CONTROL_FILE names a daemon elsewhere (a Linux one under Wine)."""
    paths = Paths.from_env(env)
    if env.get("SOCKSIFY_CONTROL_FILE") or client.is_running(paths):
        return
    pid = client.start_daemon(paths)
    if verbose:
        print(f"socksify: started socksifyd (pid {pid}), log {paths.logfile}",
              file=sys.stderr)


def main(args: argparse.Namespace, command: list[str],
         session_request: dict[str, Any]) -> int:
    """`socksify [options] COMMAND` on Windows (called by cli.main)."""
    env = dict(os.environ)
    if args.isolate:
        print("socksify: --isolate needs Linux network namespaces; not on Windows",
              file=sys.stderr)
        return 2
    dll = dll_path(env)
    if not dll.is_file():
        print(f"socksify: the Windows DLL {dll} is missing; reinstall socksify or set "
              "SOCKSIFY_DLL (scripts/build-windows.sh builds it)", file=sys.stderr)
        return 1
    cfile = control_file(env)
    try:
        _ensure_daemon(env, args.verbose)
        session = TcpSession(cfile, session_request, args.quiet)
    except LaunchError as exc:
        print(f"socksify: {exc}", file=sys.stderr)
        return exc.exit_code
    except client.DaemonUnavailable as exc:
        print(f"socksify: {exc}", file=sys.stderr)
        return 1
    env["SOCKSIFY_SESSION"] = session.id
    env["SOCKSIFY_CONTROL_FILE"] = str(cfile.absolute())
    env["SOCKSIFY_LOG"] = "0" if args.quiet else env.get("SOCKSIFY_LOG", "1")
    if args.proxy_loopback:
        env["SOCKSIFY_PROXY_LOOPBACK"] = "1"
    else:
        env.pop("SOCKSIFY_PROXY_LOOPBACK", None)
    try:
        return run(command, env, dll.absolute())
    except LaunchError as exc:
        print(f"socksify: refusing to run {command[0]}: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        session.close()
