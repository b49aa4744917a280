"""The man pages (docs/man/, hand-written roff): each renders with man and groff
without a single warning, each option --help lists is in the page and each option the
page lists is in --help, socksify.toml(5) names exactly the tables and keys the policy
parser accepts, and the installed package puts them where `man` finds them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import skip_or_fail
from socksify.policy import parse, tlsopts

MAN = Path(__file__).resolve().parents[2] / "docs" / "man"
PAGES = ["socksify.1", "socksifyd.8", "socksify.toml.5"]
def installed(suffix: str) -> Path:
    """A file the installed socksify distribution put down (its RECORD), e.g. the
    socksify script or a man page: beside this Python in a venv, under /usr/local
    for a system pip."""
    from importlib.metadata import distribution
    for f in distribution("socksify").files or []:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(str(f.locate())).resolve()
    raise AssertionError(f"the installed socksify has no {suffix} (pip install .)")


BIN = installed("bin/socksify").parent


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        skip_or_fail(f"{tool} is not installed (apt-get install man-db groff-base)")
    return str(path)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page: str) -> None:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}
    groff = subprocess.run([_need("groff"), "-man", "-Tutf8", "-ww", "-z",
                            str(MAN / page)], capture_output=True, text=True,
                           timeout=60, env=env)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    man = subprocess.run([_need("man"), "--warnings", "-l", str(MAN / page)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert man.returncode == 0 and man.stderr == "", man.stderr
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert f"\n{section}\n" in man.stdout, section


def _sections(page: str) -> dict[str, str]:
    """The roff source of each .SH section, by its title."""
    out: dict[str, str] = {}
    title = ""
    for line in (MAN / page).read_text().splitlines():
        if line.startswith(".SH "):
            title = line[4:].strip().strip('"')
            out[title] = ""
        elif title:
            out[title] += line + "\n"
    return out


def _tags(roff: str) -> list[str]:
    """The tag line after each .TP, with roff's escapes and fonts taken out."""
    lines = roff.splitlines()
    tags = []
    for i, line in enumerate(lines[:-1]):
        if line.strip() == ".TP":
            tag = re.sub(r"^\.[A-Z]+ ", "", lines[i + 1])
            tags.append(re.sub(r"\\f[BIRP]", "", tag).replace("\\-", "-"))
    return tags


def _man_options(page: str) -> set[str]:
    return {opt for tag in _tags(_sections(page)["OPTIONS"])
            for opt in re.findall(r"(?<![\w-])--?[a-z][a-z-]*", tag)}


def _help_options(program: str) -> set[str]:
    out = subprocess.run([str(BIN / program), "--help"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    options = out.stdout.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    return {opt for line in options.splitlines() if line.startswith("  -")
            for opt in re.findall(r"(?<![\w-])--?[a-z][a-z-]*",
                                  line.split("  ")[1])}


@pytest.mark.parametrize("program,page", [("socksify", "socksify.1"),
                                          ("socksifyd", "socksifyd.8")])
def test_options_match_help(program: str, page: str) -> None:
    helped = _help_options(program)
    assert "--version" in helped and len(helped) > 5
    assert _man_options(page) == helped


def test_socksifyd_commands_match_help() -> None:
    out = subprocess.run([str(BIN / "socksifyd"), "--help"], capture_output=True,
                         text=True, timeout=30).stdout
    block = out.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    helped = {m for m in re.findall(r"^  ([a-z-]+)", block, re.M)}
    documented = {tag.split()[0] for tag in _tags(_sections("socksifyd.8")["COMMANDS"])}
    assert documented == helped and "check-config" in helped


def test_policy_page_names_every_key() -> None:
    sections = _sections("socksify.toml.5")
    tables = {t.strip("[]").split(".")[0] for t in sections if t.startswith("[")}
    assert tables == parse.TOP_KEYS
    keys = {"chains": parse.CHAIN_KEYS, "rules": parse.RULE_KEYS,
            "default": {"action"}, "dns": parse.DNS_KEYS,
            "daemon": parse.DAEMON_KEYS, "frontdoor": parse.FRONTDOOR_KEYS,
            "proxies": tlsopts.KEYS - {"url"}}
    for title, roff in sections.items():
        if title.startswith("["):
            table = title.strip("[]").split(".")[0]
            assert {tag.split()[0] for tag in _tags(roff)} == keys[table], title


def test_installed_where_man_finds_them() -> None:
    """pip put the pages in share/man beside the scripts' bin/ (a venv's, or
    /usr/local), and man finds them there through PATH alone (man-db maps a .../bin
    on PATH to .../share/man)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{BIN}:/usr/bin:/bin"
    for page in PAGES:
        name, section = page.rsplit(".", 1)
        where = installed(f"share/man/man{section}/{page}")
        assert where.read_bytes() == (MAN / page).read_bytes(), \
            f"{where}: reinstall socksify (pip install .)"
        found = subprocess.run([_need("man"), "-w", section, name], capture_output=True,
                               text=True, timeout=30, env=env)
        assert found.returncode == 0, found.stderr
        assert Path(found.stdout.strip()).resolve() == where
