"""Warnings about a policy's rules that load but do not do what they seem to."""

from __future__ import annotations

from typing import Sequence

from .rules import Rule

SCRIPT_SUFFIXES = {"py", "sh", "pl", "rb", "js", "bash", "php", "lua", "tcl"}


def name_warnings(source: str, rules: Sequence[Rule]) -> list[str]:
    """Warnings for program patterns that do not do what they seem to: comm (the
    program's own say), and app names of scripts (a script's executable is its
    interpreter)."""
    out = []
    for rule in rules:
        where = f"{source}:{rule.line or '?'}: {rule.label}"
        if rule.comms:
            out.append(f"{where}: comm matches the name a program gives itself "
                       "(prctl, argv[0]): any program can take it or drop it; "
                       "match app (the executable) where that matters")
        for p in (*rule.apps, *rule.parents):
            if "/" not in p and p.rsplit(".", 1)[-1] in SCRIPT_SUFFIXES:
                out.append(f"{where}: {p!r} looks like a script, but app and parent "
                           "match the executable, which for a script is its "
                           "interpreter; match the interpreter (with user or "
                           "parent), or comm (spoofable)")
    return out

def shadowed(source: str, rules: Sequence[Rule]) -> list[str]:
    """Warnings for rules an earlier rule makes unreachable."""
    out = []
    for j, later in enumerate(rules):
        for earlier in rules[:j]:
            if earlier.covers(later):
                out.append(f"{source}:{later.line or '?'}: {later.label} can "
                           f"never match: {earlier.label} matches everything it "
                           "would (first match wins)")
                break
    return out
