"""socksify's command line read without argparse, for the common case: `socksify` pays
for what it imports on every run (docs/performance.md, "Start-up"), and argparse,
with gettext and locale, and building its parser are a good part of what is left.

parse() takes only what it is sure argparse reads the same way: each option spelled out
whole (no abbreviations, no bundled -qv), a value that does not start with "-", a
choice among the choices, a number that converts; COMMAND from the first word that is
not an option, or from "--" (kept, as argparse's REMAINDER keeps it). Anything else
(--help, --version, an error of any kind) gives None, and cli.py asks argparse, which
then says what it always said. tests/unit/test_quickargs.py checks, on generated
command lines, that whatever this accepts argparse reads to the same values."""

from __future__ import annotations

# No math or types either (1.4M instructions together): a finite positive number is
# one between 0 and infinity (NaN compares false), and the values are an object of
# ours.


class Values:
    """The values read, as attributes (argparse's Namespace, without argparse)."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

def seconds(text: str) -> float:
    """A --timeout: a positive, finite number of seconds (argparse's type too), so
    "nan", "inf", "0" and "-1" are refused, not waited for."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"not a positive number of seconds: {text!r}")
    return value


# (attribute, how the value converts or the choices it must be among)
STRATEGIES = ("strict", "dynamic", "random", "round_robin")   # chains.spec.Strategy
ISOLATE_MODES = ("none", "app", "process", "connection")      # chains.spec
VALUED: dict[str, tuple[str, object]] = {
    "--via": ("via", None),
    "--strategy": ("strategy", STRATEGIES),
    "--timeout": ("timeout", seconds),
    "--dns": ("dns", ("remote", "local", "block")),
    "--data-path": ("data_path", ("handoff", "relay")),
    "--prebuilt": ("prebuilt", int),
    "-c": ("config", str),      # a string, as argparse's: no pathlib on the way
    "--config": ("config", str),
    "--chain": ("chain", str),
    "--isolate-streams": ("isolate_streams", ISOLATE_MODES),
}
FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet",
         "--allow-unprotected": "allow_unprotected",
         "--proxy-loopback": "proxy_loopback", "--isolate": "isolate",
         "--no-isolate": "no_isolate", "--shell": "shell", "--pipeline": "pipeline"}
UNFLAGS = {"--no-pipeline": "pipeline"}
DEFAULTS: dict[str, object] = {
    "strategy": "strict", "timeout": 5.0, "dns": "remote", "data_path": "handoff",
    "prebuilt": 0, "config": None, "chain": None, "verbose": False, "quiet": False,
    "allow_unprotected": False, "proxy_loopback": False, "isolate": False,
    "no_isolate": False, "shell": False, "pipeline": True, "isolate_streams": None}


def _value(convert: object, text: str) -> object:
    """The converted value; ValueError when argparse would refuse it."""
    if convert is None or convert is str:
        return text
    if isinstance(convert, tuple):
        if text not in convert:
            raise ValueError(text)
        return text
    if convert is seconds:
        return seconds(text)
    return int(text)


def parse(argv: list[str]) -> Values | None:
    """The values argparse would give for argv, or None to let argparse read it."""
    values: dict[str, object] = dict(DEFAULTS)
    via: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--" or not word.startswith("-"):
            break                       # COMMAND [ARGS...], "--" included
        if word in FLAGS or word in UNFLAGS:
            values[FLAGS.get(word) or UNFLAGS[word]] = word in FLAGS
            i += 1
            continue
        name, eq, inline = word.partition("=")
        if name not in VALUED or (eq and not name.startswith("--")):
            return None                 # unknown, abbreviated, -h, --help, -qv, ...
        if eq:
            text = inline
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            text = argv[i + 1]
            i += 2
        else:
            return None                 # a missing value, or one like an option
        key, convert = VALUED[name]
        try:
            value = _value(convert, text)
        except ValueError:
            return None
        if key == "via":
            via.append(text)
        else:
            values[key] = value
    if (values["quiet"] and values["verbose"]) or (values["isolate"]
                                                   and values["no_isolate"]):
        return None                     # argparse: not allowed with each other
    return Values(via=via, **values, command=argv[i:])
