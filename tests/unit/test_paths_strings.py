"""paths.py's strings (what `socksify CMD` uses without importing pathlib) name what its
Paths name: as_path_str is str(Path(x)), absolute_str is str(Path(x).absolute()), and
every *_str attribute of a Paths is its Path's string."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from socksify.paths import FIELDS, Paths, absolute_str, as_path_str

PIECES = ["", "/", "//", "///", ".", "..", "a", "b/", "./", "x//y", "/./", "c d", "é"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=6))
def test_as_path_str_is_pathlibs(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert as_path_str(text) == str(PurePosixPath(text)), text
    assert absolute_str(text) == str(Path(text).absolute()), text


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["SOCKSIFY_RUNTIME_DIR", "SOCKSIFY_SOCKET",
                                        "XDG_RUNTIME_DIR", "SOCKSIFY_STATE_DIR",
                                        "XDG_STATE_HOME", "HOME"]),
                       st.lists(st.sampled_from(PIECES), min_size=1,
                                max_size=4).map("".join)))
def test_every_string_is_its_paths(env: dict[str, str]) -> None:
    paths = Paths.from_env(env)
    for name in FIELDS:
        assert getattr(paths, name + "_str") == str(getattr(paths, name)), name
    assert paths == Paths(*(getattr(paths, name) for name in FIELDS))
    assert (os.path.dirname(paths.socket_str) or ".") == str(paths.socket.parent)
