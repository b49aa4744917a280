"""Real local users for the multi-user tests (root only): fresh system accounts, and a
copy of the installed socksify that they can import.

    system_users("ab")   fresh system users sk<hex>a, sk<hex>b (no home, no shell),
                         their processes killed and the accounts deleted afterwards
    readable_site(dir)   the installed socksify and the third-party packages it imports,
                         copied world-readable into dir (this suite's Python may live
                         where other users cannot read): run them with SYSTEM_PY and
                         PYTHONPATH=dir
    system_python_differs()  why SYSTEM_PY cannot reuse those compiled packages, or None
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SYSTEM_PY = "/usr/bin/python3"
# what `import socksify` pulls in beyond the standard library
SITE_PACKAGES = ("cffi", "pycparser", "psutil", "rich", "pygments", "markdown_it",
                 "mdurl", "_cffi_backend", "dns")


@contextmanager
def system_users(suffixes: str) -> Iterator[list[pwd.struct_passwd]]:
    """One fresh system user per character of suffixes, named sk + 6 hex + suffix."""
    tag = os.urandom(3).hex()
    created: list[str] = []
    try:
        for suffix in suffixes:
            name = f"sk{tag}{suffix}"
            r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", name], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, f"useradd {name}: {r.stderr}"
            created.append(name)
        yield [pwd.getpwnam(n) for n in created]
    finally:
        for name in created:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True,
                           timeout=30)
            subprocess.run(["userdel", name], capture_output=True, timeout=30)


def readable_site(site: Path) -> None:
    import socksify
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(socksify.__file__).parent, site / "socksify",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for mod in SITE_PACKAGES:
        try:
            spec = __import__(mod)
        except ImportError:
            continue
        src = Path(str(spec.__file__))
        if src.name == "__init__.py":
            shutil.copytree(src.parent, site / mod,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, site / src.name)
    subprocess.run(["chmod", "-R", "a+rX", str(site)], check=True)


def system_python_differs() -> str | None:
    if not Path(SYSTEM_PY).is_file():
        return f"{SYSTEM_PY} missing"
    want = subprocess.run([SYSTEM_PY, "-c", "import sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True).stdout.strip()
    if want != str(tuple(sys.version_info[:2])):
        return (f"{SYSTEM_PY} is Python {want}, not this suite's "
                f"{tuple(sys.version_info[:2])}: cannot reuse its compiled packages")
    return None
