"""Windows: keep other users out of the files that hold the TCP control key.

On Linux the runtime directory's mode (0700) and control.tcp's (0600) do it; on
Windows modes mean nothing and a file inherits its directory's ACL. Python 3.13's
os.mkdir(path, 0o700) gives a new directory a protected ACL for SYSTEM,
Administrators and its owner only; this gives the same to a directory that already
existed and to control.tcp itself (before the key is written into it), whatever its
directory's ACL. Only called on Windows."""

from __future__ import annotations

import sys
from pathlib import Path

# full control for SYSTEM, Administrators and the owner; P: not inherited from above
FILE_SDDL = "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)"
DIR_SDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)"
SDDL_REVISION_1 = 1
DACL_SECURITY_INFORMATION = 0x4
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000


def restrict_to_owner(path: Path) -> None:
    """Give path (a file or a directory) the owner-only ACL; OSError if Windows
    refuses."""
    if sys.platform != "win32":
        raise OSError("winacl.restrict_to_owner is for Windows")
    import ctypes
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32")
    sddl = DIR_SDDL if path.is_dir() else FILE_SDDL
    sd = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
            ctypes.c_wchar_p(sddl), SDDL_REVISION_1, ctypes.byref(sd), None):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        if not advapi32.SetFileSecurityW(
                ctypes.c_wchar_p(str(path)),
                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION, sd):
            raise ctypes.WinError(ctypes.get_last_error())
    finally:
        kernel32.LocalFree(sd)


def describe(path: Path) -> str:
    """path's owner and ACL in SDDL (for tests and logs)."""
    if sys.platform != "win32":
        raise OSError("winacl.describe is for Windows")
    import ctypes
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32")
    sd = ctypes.c_void_p()
    owner_dacl = 0x1 | DACL_SECURITY_INFORMATION
    err = advapi32.GetNamedSecurityInfoW(ctypes.c_wchar_p(str(path)), 1, owner_dacl,
                                         None, None, None, None, ctypes.byref(sd))
    if err:
        raise ctypes.WinError(err)
    text = ctypes.c_wchar_p()
    try:
        if not advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                sd, SDDL_REVISION_1, owner_dacl, ctypes.byref(text), None):
            raise ctypes.WinError(ctypes.get_last_error())
        return str(text.value)
    finally:
        kernel32.LocalFree(sd)
        if text:
            kernel32.LocalFree(text)
