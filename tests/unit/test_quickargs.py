"""quickargs.parse(), socksify's command line read without argparse: whatever it
accepts, argparse (cli._parser(), which still reads everything else) reads to the same
values; and the usual command lines are accepted, so a run does not import argparse."""

from __future__ import annotations

import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from socksify import cli, quickargs

WORDS = ["--via", "socks5://127.0.0.1:1080", "socks4://u@10.0.0.1:1", "--strategy",
         "dynamic", "strict", "bogus", "--timeout", "2.5", "1e1", " 3 ", "nan", "x",
         "--dns", "local", "remote", "--data-path", "relay", "--prebuilt", "3", "-1",
         "--config", "-c", "p.toml", "--chain", "anon", "-q", "-v", "--quiet",
         "--verbose", "--allow-unprotected", "--proxy-loopback", "--isolate", "--",
         "--shell", "--no-isolate", "--pipeline", "--no-pipeline", "--isolate-streams", "process",
         "app", "--isolate-streams=connection",
         "-", "-qv", "--verb", "--via=socks5://h:1", "--timeout=", "--dns=block",
         "-c=p.toml", "-cp.toml", "--help", "-h", "--version", "curl", "true", "-5",
         "", "--quiet=1", "--x", "-x y", "=", "--prebuilt= 7", "--strategy=random"]


def _argparse(argv: list[str]) -> dict[str, object] | None:
    """argparse's values, or None where it exits (an error, --help, --version)."""
    with contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(cli._parser().parse_args(argv))
        except SystemExit:
            return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=8))
def test_what_it_accepts_argparse_reads_the_same(argv: list[str]) -> None:
    quick = quickargs.parse(argv)
    if quick is None:
        return          # argparse reads it, as before
    assert vars(quick) == _argparse(argv), argv


def test_the_usual_command_lines_need_no_argparse() -> None:
    for argv in (["curl", "https://example.org/"],
                 ["-q", "--via", "socks5://127.0.0.1:1080", "--", "true"],
                 ["-v", "--via", "socks4://10.0.0.5:1080", "--via",
                  "socks4a://10.1.0.7:1080", "--strategy", "dynamic", "git", "fetch"],
                 ["-c", "anon.toml", "--chain", "anon", "--isolate", "ssh", "-v", "h"],
                 ["--via=socks5://h:1", "--data-path", "relay", "--prebuilt", "2",
                  "--timeout", "3", "--dns", "local", "--proxy-loopback",
                  "--allow-unprotected", "--", "curl", "-q"]):
        quick = quickargs.parse(argv)
        assert quick is not None, argv
        assert vars(quick) == _argparse(argv), argv


def test_it_leaves_help_errors_and_oddities_to_argparse() -> None:
    for argv in (["--help"], ["-h"], ["--version"], ["--verb", "x"], ["-qv", "x"],
                 ["-q", "-v", "x"], ["--via"], ["--via", "-x", "y"],
                 ["--strategy", "bogus", "x"], ["--timeout", "soon", "x"],
                 ["--prebuilt", "1.5", "x"], ["-cFILE", "x"], ["-", "x"]):
        assert quickargs.parse(argv) is None, argv


def test_a_timeout_must_be_a_positive_finite_number() -> None:
    for text in ("nan", "inf", "0", "-1e-3"):
        argv = [f"--timeout={text}", "x"]
        assert quickargs.parse(argv) is None, argv
        assert _argparse(argv) is None, argv
    quick = quickargs.parse(["--timeout", "0.25", "x"])
    assert quick is not None and quick.timeout == 0.25
