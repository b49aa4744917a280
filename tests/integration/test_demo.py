"""The README's first command shows the main job on one machine without root: run
its Python part (the install step is the project's own `pip install .`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_local_demo_fetches_through_two_front_door_hops() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_local.py")],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "sha256 matches" in text, text
    # -v: the program's one connection, through both hops, in order
    route = [ln for ln in text.splitlines()
             if "via socks5://127.0.0.1:" in ln and "connected in" in ln]
    assert len(route) == 1 and route[0].count("socks5://127.0.0.1:") == 2, text
    # each hop's daemon logged the connection it carried on
    for hop in ("hop1", "hop2"):
        carried = [ln for ln in text.splitlines()
                   if ln.strip().startswith(f"{hop}: [c") and "-> 127.0.0.1:" in ln
                   and "via direct" in ln]
        assert len(carried) == 1, text
