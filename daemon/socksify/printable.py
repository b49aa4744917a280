"""Text from a daemon made safe to print on a terminal.

Whatever a daemon replies (errors, status, app and host names, connection lines) may
come from someone else: another user's program names its own process, a proxy or a DNS
answer names hosts, and a directory another user made may hold their fake daemon. Such
text must not drive the terminal, so every control character (C0, DEL, C1), Unicode
format character (bidi overrides, zero-width marks) and line/paragraph separator is
shown as a visible escape: ESC becomes \\x1b, U+202E becomes \\u202e."""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def printable(value: object) -> str:
    """str(value) with every control or invisible formatting character escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():      # fast path: nothing to escape (spaces are printable)
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _HIDDEN else ch
                   for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
