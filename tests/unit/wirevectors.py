"""The shared byte-level vectors in tests/vectors (read by the C tests too, through
tests/c/vectors.h): one case per line, `KIND NAME key=value ...`; `#` comments and
blank lines skipped."""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "vectors"


def load(file: str, kind: str) -> list[dict[str, str]]:
    """Every `kind` line of tests/vectors/FILE as its key=value fields, plus "name"."""
    out = []
    for line in (DIR / file).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == kind:
            fields = dict(w.split("=", 1) for w in words[2:])
            fields["name"] = words[1]
            out.append(fields)
    return out
