"""`socksify --shell`: the user's shell, socksified, with "(socksify) " before its
prompt. The shell still reads the user's own start-up file; a small one of ours runs
it, then marks the prompt: bash through --rcfile, zsh through ZDOTDIR (put back
before the user's .zshrc runs), sh, dash and other POSIX shells through ENV."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

MARK = "(socksify) "

_BASHRC = """\
if [ -f ~/.bashrc ]; then . ~/.bashrc; fi
PS1="{mark}${{PS1-\\s-\\v\\$ }}"
"""
_ZSHENV = """\
if [ -f "${SOCKSIFY_ZDOTDIR:-$HOME}/.zshenv" ]; then
  . "${SOCKSIFY_ZDOTDIR:-$HOME}/.zshenv"
fi
"""
_ZSHRC = """\
if [ -n "${{SOCKSIFY_ZDOTDIR+x}}" ]; then ZDOTDIR="$SOCKSIFY_ZDOTDIR"; else unset ZDOTDIR; fi
unset SOCKSIFY_ZDOTDIR
if [ -f "${{ZDOTDIR:-$HOME}}/.zshrc" ]; then . "${{ZDOTDIR:-$HOME}}/.zshrc"; fi
PS1="{mark}$PS1"
"""
_SHRC = """\
if [ -n "${{SOCKSIFY_ENV+x}}" ]; then ENV="$SOCKSIFY_ENV"; unset SOCKSIFY_ENV
else unset ENV; fi
if [ -n "${{ENV:-}}" ] && [ -f "$ENV" ]; then . "$ENV"; fi
PS1="{mark}${{PS1-\\$ }}"
"""


def user_shell() -> str:
    """$SHELL, else the user's login shell, else /bin/sh."""
    shell = os.environ.get("SHELL", "")
    if not shell:
        try:
            import pwd
            shell = pwd.getpwuid(os.getuid()).pw_shell
        except (ImportError, KeyError):
            shell = ""
    return shell or "/bin/sh"


def shell_command(shell: str) -> tuple[list[str], dict[str, str], Callable[[], None]]:
    """The argv and the environment additions that start `shell` interactive with a
    marked prompt, and what removes our start-up files once it has ended."""
    tmp = Path(tempfile.mkdtemp(prefix="socksify-shell-"))

    def cleanup() -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    name = os.path.basename(shell)
    env: dict[str, str] = {}
    if name == "bash":
        rc = tmp / "bashrc"
        rc.write_text(_BASHRC.format(mark=MARK))
        return [shell, "--rcfile", str(rc), "-i"], env, cleanup
    if name == "zsh":
        (tmp / ".zshenv").write_text(_ZSHENV)
        (tmp / ".zshrc").write_text(_ZSHRC.format(mark=MARK))
        if "ZDOTDIR" in os.environ:
            env["SOCKSIFY_ZDOTDIR"] = os.environ["ZDOTDIR"]
        env["ZDOTDIR"] = str(tmp)
        return [shell, "-i"], env, cleanup
    rc = tmp / "shrc"             # sh, dash, ksh, busybox ash: $ENV at start
    rc.write_text(_SHRC.format(mark=MARK))
    if os.environ.get("ENV"):
        env["SOCKSIFY_ENV"] = os.environ["ENV"]
    env["ENV"] = str(rc)
    return [shell, "-i"], env, cleanup
