"""Running the network tools (iproute2's `ip`, nftables' `nft`) inside the isolated
namespaces. Unprivileged, the launcher holds every capability in its new user
namespace, but only until an exec: its uid there is the caller's own (not 0), so an
exec'd tool would start with none. Each tool's child therefore raises CAP_NET_ADMIN
as an ambient capability (capset + prctl) right before its exec; the launcher itself
never does, so the program it runs afterwards starts with no capability at all and
cannot change the rules.

Why the tools and not netlink from Python: nft's ruleset language is the documented,
stable interface to nf_tables (its netlink messages are not), and both tools are
already on every machine that has nf_tables (Debian's iproute2 and nftables)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

from .namespace import IsolationUnavailable

CAP_NET_ADMIN = 12
_CAP_VERSION_3 = 0x20080522
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
TOOL_TIMEOUT = 10.0

# where the tool lives (sbin is often not on an unprivileged user's PATH) and the
# Debian package that ships it
TOOLS = {"nft": ("/usr/sbin/nft", "nftables"), "ip": ("/usr/sbin/ip", "iproute2")}


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _ambient_net_admin() -> None:
    """In the tool's child, before exec: keep CAP_NET_ADMIN across the exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _Header(_CAP_VERSION_3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0].inheritable |= 1 << CAP_NET_ADMIN
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_RAISE)")


def find(tool: str) -> str:
    """The tool's path; IsolationUnavailable naming the package when it is missing."""
    default, package = TOOLS[tool]
    path = shutil.which(tool) or (default if os.access(default, os.X_OK) else None)
    if path is None:
        raise IsolationUnavailable(f"the {tool} tool is missing: install the "
                                   f"{package} package (apt install {package})")
    return path


def run(tool: str, args: list[str], script: str, unprivileged: bool) -> None:
    """Run `tool args` with script on its standard input, with CAP_NET_ADMIN in the
    isolated namespaces. Raises IsolationUnavailable with the tool's own message."""
    path = find(tool)
    try:
        done = subprocess.run(
            [path, *args], input=script, capture_output=True, text=True,
            timeout=TOOL_TIMEOUT, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            preexec_fn=_ambient_net_admin if unprivileged else None)
    except (OSError, subprocess.SubprocessError) as exc:
        raise IsolationUnavailable(f"cannot run {path}: {exc}") from None
    if done.returncode != 0:
        why = " ".join(done.stderr.split())[:600] or f"exit status {done.returncode}"
        raise IsolationUnavailable(f"{path} {' '.join(args)} failed in the isolated "
                                   f"namespace: {why}")
