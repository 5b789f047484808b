"""Every tutorial runs end to end in quick mode and writes at least one figure.

Tutorials are the scripts ``tutorials/NN_name.py`` (tutorials/README.md). Each runs in its own Python process,
as a user would run it, with ``NANO_VIDEODIFF_QUICK=1`` (tiny sizes, a handful of steps) and
``NANO_VIDEODIFF_TUTORIAL_OUT`` pointing at a temporary folder, so nothing is written into the repository.
A tutorial that finds no figures in ``<out>/NN/`` is not following the convention: write them with
``tutorials/_common.py``'s ``out_dir("NN")``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 120  # quick mode aims at < 20 s per tutorial; this is the hard limit on a busy machine


def test_tutorials_are_found():
    assert TUTORIALS, "no tutorials/NN_name.py found"
    assert (ROOT / "tutorials" / "README.md").exists()


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_quick_mode(script, tmp_path):
    env = dict(os.environ)
    env.update(NANO_VIDEODIFF_QUICK="1", NANO_VIDEODIFF_TUTORIAL_OUT=str(tmp_path), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} did not finish within {TIMEOUT_S} s in quick mode")
    assert proc.returncode == 0, (f"{script.name} exited with {proc.returncode}\n--- stdout (end) ---\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr (end) ---\n{proc.stderr[-3000:]}")
    number = script.name[:2]
    pngs = sorted((tmp_path / number).rglob("*.png"))
    assert pngs, (f"{script.name} wrote no PNG to {tmp_path / number}: tutorials write their figures to "
                  f"_common.out_dir({number!r}); files found: {sorted(p.name for p in tmp_path.rglob('*'))}")
    checks = [line for line in proc.stdout.splitlines() if line.startswith("CHECK ")]
    assert checks and all(line.endswith(")") and (": HELD (" in line or ": NOT HELD (" in line) for line in checks), (
        f"{script.name} must print the check of its claim with _common.check (CHECK <claim>: HELD|NOT HELD "
        f"(<evidence>)); printed: {checks}")
